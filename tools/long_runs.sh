#!/bin/bash
# The long studies, one core each: pretraining and what follows it (tools/after_pretraining.sh) on
# one, a queue of resumable studies on the other. Every step resumes from the files on disk; a
# finished cell or run is skipped. Start both with
#   bash tools/long_runs.sh            (from the repository root; logs in runs/*.log)
# See DEVELOPERS.md, "Long jobs".
set -u
cd "$(dirname "$0")/.." || exit 1
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
mkdir -p runs/pretrain_mixed

if [ "${1:-}" != "--queue" ]; then
    # a fresh machine: install the project first, as the README's test command does
    if [ ! -x .venv/bin/forcefield-et ]; then
        echo "no .venv here: installing the project first (a few minutes)"
        python -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[openmm,test]" || exit 1
    fi
    # the last snapshot (step 56,250) marks a finished pretraining run
    setsid nohup bash -c '[ -f runs/pretrain_mixed/snapshots/step_56250.pt ] ||
        .venv/bin/forcefield-et pretrain --config configs/pretrain_mixed.yaml >> runs/pretrain_mixed/train.log 2>&1
        [ -f runs/pretrain_mixed/snapshots/step_56250.pt ] && bash tools/after_pretraining.sh >> runs/after_pretraining.log 2>&1' \
        > /dev/null 2>&1 &
    echo "pretraining, then tools/after_pretraining.sh: process group $!"
    first=$!
    setsid nohup bash "$0" --queue >> runs/queue.log 2>&1 &
    echo "queue: process group $!"
    # each job is its own scheduling group (autogroup): ahead of interactive work (root only), once
    # setsid has made the group
    sleep 1
    for pid in "$first" "$!"; do echo -5 > "/proc/$pid/autogroup" 2>/dev/null || true; done
    exit 0
fi

SNAPSHOT=runs/pretrain_mixed/snapshots/step_14063.pt
# shellcheck source=tools/long_runs_lib.sh  # step, study, wait_for_shipped, converged_models
source tools/long_runs_lib.sh

step "converged fine-tuning, the scratch cell under way"
study --starts scratch --sizes 50 --molecules naphthalene
step "recipe variants at 50 frames from the 0.45 M-conformation snapshot: base, replay, force weight 100, ZBL 0.75"
study --molecules aspirin ethanol --sizes 50 --starts "$SNAPSHOT"
study --molecules aspirin ethanol --sizes 50 --starts "$SNAPSHOT" --replay
study --molecules aspirin ethanol --sizes 50 --starts "$SNAPSHOT" --force-weight 100
study --molecules aspirin ethanol --sizes 50 --starts "$SNAPSHOT" --zbl 0.75
study --molecules aspirin ethanol --sizes 50 --starts "$SNAPSHOT" --lr 1e-4
study --molecules aspirin ethanol --sizes 50 --starts scratch --replay   # replay without pretraining
study --molecules aspirin ethanol --sizes 50 --starts "$SNAPSHOT" --lr 1e-3
step "MD warning: the 50-frame driver and the stable reference extended to 100 ps, then watched"
# the MD-warning studies below run once: their result files are committed (the MD runs are not)
if [ ! -f benchmarks/results/md_warning/md_warning.json ] || [ ! -f benchmarks/results/md_warning_self/md_warning.json ] \
    || [ ! -f benchmarks/results/md_warning_ethanol/md_warning.json ]; then
md() { .venv/bin/python -m benchmarks.md_stability --molecules aspirin --save-every 20 --time-ps 100 \
    --out runs/md_warning/out --work runs/md_warning/work "$@" >> runs/md_warning.log 2>&1; }
md --models s50 --model-path s50=benchmarks/results/md_warning/drivers/aspirin-50-scratch.pt
md --models et-pretrained-finetuned
.venv/bin/python -m benchmarks.prepare --molecules aspirin --models et-scratch >> runs/md_warning.log 2>&1
md --models et-scratch
.venv/bin/python -m benchmarks.md_warning --runs runs/md_warning/out --work runs/md_warning/work \
    --stable et-pretrained-finetuned --collapsing s50 et-scratch --stride 5 >> runs/md_warning.log 2>&1
# a 4-head committee (the short-budget recipe, from scratch) driving MD with its mean, watching itself
md --models self4 --model-path self4=runs/md_warning/self_driver/best.pt
.venv/bin/python -m benchmarks.md_warning --runs runs/md_warning/out --work runs/md_warning/work \
    --watcher runs/md_warning/self_driver --stable et-pretrained-finetuned --collapsing self4 --stride 5 \
    --out benchmarks/results/md_warning_self >> runs/md_warning.log 2>&1
step "MD warning on ethanol: the short-budget scratch ET (it collapsed at 61 ps) and rmd17-ethanol (stable), watched"
.venv/bin/python -m benchmarks.prepare --molecules ethanol --models et-scratch >> runs/md_warning.log 2>&1
md --molecules ethanol --models et-scratch
md --molecules ethanol --models et-pretrained-finetuned
.venv/bin/python -m benchmarks.md_warning --molecule ethanol --train-watcher --runs runs/md_warning/out \
    --work runs/md_warning/work --stable et-pretrained-finetuned --collapsing et-scratch --stride 5 \
    >> runs/md_warning.log 2>&1
fi
step "converged fine-tuning, scratch cells"
study --starts scratch --sizes 1000 50
study --molecules naphthalene salicylic --sizes 50 --starts scratch --replay   # as aspirin and ethanol
study --sizes 50 --starts scratch --replay --lr 1e-3   # the variant the pretrained start gets too
# the reruns live in runs/rerun/ until they finish; then their results replace the first ones (kept in
# runs/rerun/first/), so that the docs never cite a half-trained cell
rerun() { study --runs runs/rerun --out runs/rerun/results "$@"; }
# CELL's finished rerun replaces its committed result (the first one is kept); fails if there is nothing new
adopt_rerun() {
    local new=runs/rerun/results/runs/$1/result.json committed=benchmarks/results/finetune_converged/runs/$1/result.json
    [ -f "$new" ] && ! cmp -s "$new" "$committed" || return 1
    mkdir -p "runs/rerun/first/$1" && cp "$committed" "runs/rerun/first/$1/" && cp "$new" "$committed"
}
step "converged fine-tuning: ethanol-1000-scratch with a more patient schedule (it stopped early with 0.8 CPU-h unused)"
study --molecules ethanol --sizes 1000 --starts scratch --patience 10
step "converged fine-tuning: ethanol-1000-scratch again, for its weights, if validation still chooses it"
# the export and the 300 ps MD of the scratch start need the chosen cell's weights; the first run's are not
# kept. The rerun trains in runs/rerun/ and, once finished, replaces the committed result and brings its
# weights, so that result and weights always belong together
if [ ! -f runs/finetune_converged/ethanol-1000-scratch/best.pt ] && [ "$(.venv/bin/python -c "
from benchmarks.finetune_converged import RESULTS_DIR, chosen_cell, finished
print(chosen_cell(finished(RESULTS_DIR), 'ethanol', 'scratch')['cell'])")" = ethanol-1000-scratch ]; then
    rerun --molecules ethanol --sizes 1000 --starts scratch
    cell=ethanol-1000-scratch
    if adopt_rerun "$cell"; then
        mkdir -p "runs/finetune_converged/$cell"
        cp runs/rerun/$cell/{best.pt,config.yaml,metrics.csv,learning_curve.csv} "runs/finetune_converged/$cell/"
        .venv/bin/python -m benchmarks.finetune_converged --report > /dev/null
    fi
fi
# the three 50-frame cells that ran before the radial-basis cut (naphthalene and salicylic acid pretrained
# replay + lr 1e-3, salicylic acid scratch) were trained again at full speed and adopted; their rerun
# folders are gone, so the step is not repeated here (git history: "rerun --molecules naphthalene ...")
step "converged fine-tuning: the chosen 50-frame cells that stopped early, again with a more patient schedule"
patient_cells 50 aspirin ethanol naphthalene salicylic
.venv/bin/python -m benchmarks.finetune_converged --report > /dev/null
step "pretraining model size by accuracy per CPU-hour"
.venv/bin/python -m benchmarks.pretrain_size >> runs/pretrain_size.log 2>&1
step "converged fine-tuning: naphthalene-1000, both starts, with the learning rate decayed over the CPU budget"
# the recipe's plateau schedule never lowered the rate of the budget-bound naphthalene scratch cell (its error
# still falling at 2 CPU-h): the cosine variant anneals before the budget ends; validation chooses
study --molecules naphthalene --sizes 1000 --starts pretrained --schedule cosine
study --molecules naphthalene --sizes 1000 --starts scratch --schedule cosine
# on naphthalene the cosine cells ended above the recipe's on both starts (3.22 against 2.97 and 4.76 against
# 4.09 meV/Å), so salicylic acid keeps the recipe alone
step "converged fine-tuning: the pretrained encoder at 0.3x the head's learning rate (50 frames, the chosen variant)"
# against the chosen 50-frame pretrained cells of aspirin and ethanol (replay, lr 1e-3, patience 10)
study --molecules aspirin ethanol --sizes 50 --starts pretrained --replay --lr 1e-3 --patience 10 --encoder-lr-scale 0.3
step "converged fine-tuning: a peak learning rate of 2e-3 for the chosen 50-frame pretrained cells (1e-3 beat 5e-4 and 1e-4)"
study --molecules aspirin ethanol --sizes 50 --starts pretrained --replay --lr 2e-3 --patience 10
step "converged fine-tuning: half of every batch replayed (0.2 in the chosen 50-frame pretrained cells)"
# replay was the largest gain at 50 frames; each molecule keeps the learning rate and patience of its chosen cell
for molecule in aspirin ethanol; do
    settings=$(.venv/bin/python -c "from benchmarks.finetune_converged import RESULTS_DIR, chosen_cell, finished
cell = chosen_cell(finished(RESULTS_DIR), '$molecule', 'pretrained', 50)
print(cell['lr'], cell['plateau_patience'])")
    read -r lr patience <<< "$settings"
    study --molecules "$molecule" --sizes 50 --starts pretrained --replay 0.5 --lr "$lr" --patience "$patience"
done
step "pretraining-scaling curve: fine-tuning from the run's snapshots (aspirin, ethanol; 50 and 1000 frames)"
.venv/bin/python -m benchmarks.pretrain_scaling --sizes 50 >> runs/pretrain_scaling.log 2>&1
.venv/bin/python -m benchmarks.pretrain_scaling >> runs/pretrain_scaling.log 2>&1
step "converged fine-tuning: the chosen 50-frame cells after the molecule's own GFN2-xTB stage"
xtb_stage_cells pretrained aspirin ethanol naphthalene salicylic
# the same from scratch (the stage trains the scratch ET first): what the general pretraining adds to it
xtb_stage_cells scratch aspirin ethanol
step "peers: NequIP and MACE at the same CPU budget"
if ! peers_finished; then
    # their own environments (docs/benchmarks.md, "Environments"), made here on a machine without them
    [ -x /work/peer-venvs/nequip/bin/python ] || { python3 -m venv /work/peer-venvs/nequip &&
        /work/peer-venvs/nequip/bin/pip install -q torch==2.13.0 "nequip==0.19.*" >> runs/peers.log 2>&1; }
    [ -x /work/peer-venvs/mace/bin/python ] || { python3 -m venv /work/peer-venvs/mace &&
        /work/peer-venvs/mace/bin/pip install -q torch==2.13.0 mace-torch >> runs/peers.log 2>&1; }
    # all five models: the ET cells are the finished finetune_converged aspirin cells, reused; the speed rounds
    # and the evaluation take every model together
    # the after-pretraining core joins once it is done (it trains the models and runs the MD this one is not
    # doing); this one waits for those and summarises all the models together
    .venv/bin/python -m benchmarks.peers --wait >> runs/peers.log 2>&1
fi
# while the other core starts the 2 CPU-hour cells below
step "the collapsed salicylic acid run repaired with DFT frames of its collapse (label, fine-tune, 300 ps again)"
# a finished repair (its summary committed) runs once: its trajectories, optimiser state and MD state stay local
[ -f benchmarks/results/collapse_repair/collapse_repair.json ] ||
    .venv/bin/python -m benchmarks.collapse_repair >> runs/collapse_repair.log 2>&1
step "converged fine-tuning: the chosen 50-frame cells with a 2 CPU-hour budget (their errors still fell at 0.5)"
longer_budget_cells 2 pretrained --xtb naphthalene   # the one GFN2-xTB-stage cell above MACE's 50-frame figure
longer_budget_cells 2 pretrained aspirin ethanol naphthalene salicylic
step "converged fine-tuning: the chosen scratch 50-frame cells with a 2 CPU-hour budget too (the pretraining gain at equal budgets)"
longer_budget_cells 2 scratch aspirin ethanol naphthalene salicylic
step "converged fine-tuning: naphthalene's chosen GFN2-xTB-stage cell after a stage of 2 CPU-hours (the 0.5-hour stage stopped on its budget)"
variant_cells "xtb_stage_hours=2" pretrained --xtb naphthalene   # the one stage cell still above MACE's 50-frame figure
step "300 ps MD replicas (seeds 1, 2) of the converged pretrained-start models, aspirin and salicylic acid (the bundled models: salicylic acid's repaired)"
md_replicas et-pretrained-finetuned
step "converged fine-tuning: the chosen 50-frame cells with best.pt, the schedule and early stopping following the validation force MAE"
variant_cells "select_by='force-mae'" pretrained aspirin ethanol naphthalene salicylic
variant_cells "select_by='force-mae'" scratch aspirin ethanol
.venv/bin/python -m benchmarks.finetune_converged --report > /dev/null
step "queue done"
