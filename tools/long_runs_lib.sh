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

# the converged 1000-frame models of MOLECULES: pretrained-start cells (with and without replay), the export
# of both starts (tools' --bundle), then 300 ps of MD at 500 K for each model and their errors on new DFT frames
converged_models() {
    study --molecules "$@" --starts pretrained --sizes 1000 --replay
    study --molecules "$@" --starts pretrained --sizes 1000
    .venv/bin/python -m benchmarks.finetune_converged --bundle --zbl 0.75 --molecules "$@" >> runs/finetune_converged.log 2>&1
    local ready
    ready=$(converged_molecules "$@")
    [ -n "$ready" ] || return 0
    # shellcheck disable=SC2086  # one word per molecule
    .venv/bin/python -m benchmarks.md_stability --molecules $ready --models et-pretrained-finetuned et-converged-scratch \
        --model-path "et-converged-scratch=runs/finetune_converged/exported/rmd17-{molecule}-scratch.pt" \
        --out benchmarks/results/md_stability_converged --work runs/md_stability_converged \
        >> runs/md_stability_converged.log 2>&1
    # both starts' models on new PBE/def2-SVP frames (labels kept in runs/dft_generalisation/)
    # shellcheck disable=SC2086
    .venv/bin/python -m benchmarks.dft_generalisation --molecules $ready \
        --model "converged scratch=runs/finetune_converged/exported/rmd17-{molecule}-scratch.pt" \
        >> runs/dft_generalisation.log 2>&1
}
