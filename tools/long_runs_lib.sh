# Shell helpers of tools/long_runs.sh and tools/after_pretraining.sh (sourced from the repository root).
step() { echo "$(date -u +%FT%T) $*"; }
study() { .venv/bin/python -m benchmarks.finetune_converged "$@" >> runs/finetune_converged.log 2>&1; }

# whether the bundled pretrained model is the mixed-corpus run (configs/pretrain_mixed.yaml)
shipped() {
    [ "$(.venv/bin/python -c "from forcefield_et.checkpoint import read_checkpoint
print('pretrain_mixed' in read_checkpoint('forcefield_et/checkpoints/pretrained.pt')['metadata']['description'])")" = True ]
}

# wait until the mixed-corpus model is shipped; fails at once when the pretraining is neither running nor finished
wait_for_shipped() {
    until shipped; do
        pgrep -f "pretrain --config configs/pretrain_mixed.yaml" > /dev/null \
            || [ -f runs/pretrain_mixed/snapshots/step_56250.pt ] || return 1
        sleep 300
    done
}

# the given molecules whose bundled rmd17-<molecule> model comes from the converged study
converged_molecules() {
    .venv/bin/python -c "import sys
from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.registry import BUNDLED_DIR
print(' '.join(m for m in sys.argv[1:] if 'finetune_converged' in
      (read_checkpoint(BUNDLED_DIR / f'rmd17-{m}.pt')['metadata'].get('description') or '')))" "$@"
}

# the pretrained-start 1000-frame variants ("replay", "plain") to train for MOLECULES: both for aspirin and
# ethanol, which decide; for any other molecule the one validation chose on both of them, once both have
# finished both cells and agree (both otherwise)
pretrained_variants() {
    .venv/bin/python -c "import sys
from benchmarks.finetune_converged import RESULTS_DIR, chosen_cell, finished
results, chosen = finished(RESULTS_DIR), set()
cells = {r['cell'] for r in results}
for reference in ('aspirin', 'ethanol'):
    if reference in sys.argv[1:] or not {f'{reference}-1000-pretrained', f'{reference}-1000-pretrained-replay'} <= cells:
        sys.exit(print('replay plain'))
    chosen.add('replay' if chosen_cell(results, reference, 'pretrained').get('replay') else 'plain')
print(chosen.pop() if len(chosen) == 1 else 'replay plain')" "$@"
}

# the chosen cell of each start at SIZE frames for each of MOLECULES again with a more patient schedule
# (--patience 10) where it stopped early (no better validation loss) with over a quarter of its budget unused:
# the recipe halves the learning rate after 3 validations without improvement, which a noisy validation
# error triggers long before the error has levelled off. Where validation has chosen a patient cell for one
# start, the other start's chosen cell gets one too, so that both starts are compared under the same
# schedule; a second pass adds those partners of the patient cells the first pass trained (a finished cell is
# skipped). Usage: patient_cells SIZE MOLECULE...
patient_cells() {
    patient_pass "$@"
    patient_pass "$@"
}

patient_pass() {
    local size=$1 molecule start flags
    shift
    .venv/bin/python -c "import sys
from dataclasses import replace
from benchmarks.finetune_converged import BUDGET_HOURS, PLATEAU_PATIENCE, RESULTS_DIR, Variant, chosen_cell, finished
results, size = finished(RESULTS_DIR), int(sys.argv[1])
for molecule in sys.argv[2:]:
    chosen = {start: chosen_cell(results, molecule, start, size) for start in ('pretrained', 'scratch')}
    other_patient = {start: any(c and Variant.of(c).patience != PLATEAU_PATIENCE
                                for other, c in chosen.items() if other != start) for start in chosen}
    for start, cell in chosen.items():
        if (not cell or Variant.of(cell).patience != PLATEAU_PATIENCE or Variant.of(cell).schedule != 'plateau'
                or Variant.of(cell).budget_hours):  # a cell with a longer budget is past this step
            continue
        stopped_early = (cell['stop_reason'].startswith('no better')
                         and cell['cpu_hours'] < 0.75 * BUDGET_HOURS[size])
        if stopped_early or other_patient[start]:
            print(molecule, start, *replace(Variant.of(cell), patience=10).flags())" "$size" "$@" |
    while read -r molecule start flags; do
        # shellcheck disable=SC2086  # the variant's flags (--patience 10 among them), one word each
        study --molecules "$molecule" --starts "$start" --sizes "$size" $flags
    done
}

# the converged 1000-frame models of MOLECULES: pretrained-start cells (pretrained_variants), patient_cells, the export of
# both starts (tools' --bundle), then, for each molecule with both models exported, 300 ps of MD at 500 K for
# each model and their errors on new DFT frames
converged_models() {
    local variant molecule ready=""
    for variant in $(pretrained_variants "$@"); do
        if [ "$variant" = replay ]; then
            study --molecules "$@" --starts pretrained --sizes 1000 --replay
        else
            study --molecules "$@" --starts pretrained --sizes 1000
        fi
    done
    patient_cells 1000 "$@"
    .venv/bin/python -m benchmarks.finetune_converged --bundle --zbl 0.75 --molecules "$@" >> runs/finetune_converged.log 2>&1
    for molecule in $(converged_molecules "$@"); do
        [ -f "runs/finetune_converged/exported/rmd17-$molecule-scratch.pt" ] && ready="$ready $molecule"
    done
    [ -n "$ready" ] || return 0
    # shellcheck disable=SC2086  # one word per molecule
    # the cells' own exports (a bundled model may since have been repaired: benchmarks.collapse_repair --bundle)
    .venv/bin/python -m benchmarks.md_stability --molecules $ready --models et-pretrained-finetuned et-converged-scratch \
        --model-path "et-pretrained-finetuned=runs/finetune_converged/exported/rmd17-{molecule}.pt" \
        --model-path "et-converged-scratch=runs/finetune_converged/exported/rmd17-{molecule}-scratch.pt" \
        --out benchmarks/results/md_stability_converged --work runs/md_stability_converged \
        >> runs/md_stability_converged.log 2>&1
    # both starts' models on new PBE/def2-SVP frames (labels kept in runs/dft_generalisation/)
    # shellcheck disable=SC2086
    .venv/bin/python -m benchmarks.dft_generalisation --molecules $ready \
        --model "converged scratch=runs/finetune_converged/exported/rmd17-{molecule}-scratch.pt" \
        >> runs/dft_generalisation.log 2>&1
}

# the chosen 50-frame cell of START (pretrained, scratch) for each of MOLECULES again after the molecule's own
# GFN2-xTB stage (--xtb-stage: the corpus from its SMILES, the stage from START, then the cell with the same
# replay and patience), at the chosen cell's learning rate and at the recipe's (5e-4: the stage's weights are
# already close, and the larger rates chosen without the stage unsettle them first); validation chooses.
# Usage: xtb_stage_cells START MOLECULE...
xtb_stage_cells() {
    local start=$1 molecule settings replay lr patience rate
    shift
    for molecule in "$@"; do
        settings=$(.venv/bin/python -c "from benchmarks.finetune_converged import RESULTS_DIR, Variant, chosen_cell, finished
variant = Variant.of(chosen_cell(finished(RESULTS_DIR), '$molecule', '$start', 50))
print(variant.replay, variant.lr, variant.patience)") || continue
        read -r replay lr patience <<< "$settings"
        for rate in 0.0005 "$lr"; do
            # shellcheck disable=SC2046  # no --replay for a cell without replay
            study --molecules "$molecule" --sizes 50 --starts "$start" --xtb-stage --lr "$rate" --patience "$patience" \
                $([ "$replay" = 0.0 ] || echo --replay "$replay")
        done
    done
}

# the chosen 50-frame cell of START for each MOLECULE again with one change of its variant (CHANGE: keyword
# arguments of dataclasses.replace on benchmarks.finetune_converged.Variant, e.g. "budget_hours=2"); --xtb:
# the chosen cell after the molecule's GFN2-xTB stage; validation chooses between the cells afterwards.
# Usage: variant_cells CHANGE START [--xtb] MOLECULE...
variant_cells() {
    local change=$1 start=$2 xtb=False molecule flags
    shift 2
    if [ "$1" = --xtb ]; then xtb=True; shift; fi
    for molecule in "$@"; do
        flags=$(.venv/bin/python -c "from dataclasses import replace
from benchmarks.finetune_converged import RESULTS_DIR, Variant, chosen_cell, finished
cell = chosen_cell(finished(RESULTS_DIR), '$molecule', '$start', 50, xtb_stage=$xtb)
print(' '.join(replace(Variant.of(cell), $change).flags()) if cell else 'none')") || continue
        [ "$flags" = none ] && continue
        # shellcheck disable=SC2086  # one word per option
        study --molecules "$molecule" --sizes 50 --starts "$start" $flags
    done
}

# the chosen 50-frame cells with a CPU budget of HOURS. Usage: longer_budget_cells HOURS START [--xtb] MOLECULE...
longer_budget_cells() {
    local hours=$1
    shift
    variant_cells "budget_hours=$hours" "$@"
}

# 300 ps MD replicas of the converged 1000-frame models where one trajectory per model left the
# comparison open (aspirin: only the scratch start collapsed; salicylic acid: only the pretrained start
# did, through a hole both models share): new velocity seeds from other test_01 start frames, the same
# MDsim protocol, one result folder per seed. Usage: md_replicas MODEL [--model-path NAME=PATH]
md_replicas() {
    local seed
    for seed in 1 2; do
        .venv/bin/python -m benchmarks.md_stability --molecules aspirin salicylic --models "$@" \
            --seed "$seed" --start-frame "$seed" --out "benchmarks/results/md_stability_replicas/seed$seed" \
            --work "runs/md_stability_replicas/seed$seed" >> runs/md_replicas.log 2>&1
    done
}

# whether benchmarks.peers has finished: its committed summary holds the test errors and MD runs of all
# five models (a new machine then needs neither the peer environments nor the run)
peers_finished() {
    .venv/bin/python -c "import json, sys
from benchmarks.peers import ALL_MODELS
evaluation = json.load(open('benchmarks/results/peers/peers.json')).get('evaluation', {})
sys.exit(0 if all(set(ALL_MODELS) <= set(evaluation.get(part, {})) for part in ('models', 'md')) else 1)" 2>/dev/null
}
