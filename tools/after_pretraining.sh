#!/bin/bash
# What follows the mixed-corpus pretraining (configs/pretrain_mixed.yaml) once it has finished:
# ship its best weights as the bundled `pretrained` model (with configs/pretrained_mixed_card.yaml),
# run the frame-selection demo from it, measure it on drug-like molecules in no shared file, fine-tune
# the converged study's pretrained-start cells at 50 frames (the recipe as it is, and with the replay
# of pretraining frames, which lowered the 50-frame validation error from the 0.45 M-conformation
# snapshot), then the 1000-frame cells of aspirin and ethanol, their export (the cell with the lowest
# validation error becomes the bundled rmd17-<molecule>, ZBL prior on: it is zero on every training
# frame) and the 300 ps MD-stability runs of both starts' models, then the same for naphthalene and
# salicylic acid (with the replay variant that validation chose on aspirin and ethanol). Every step
# resumes or skips what has finished.
# tools/long_runs.sh starts it after the pretraining on the same core; by hand:
#   bash tools/after_pretraining.sh    (logs in runs/*.log)
set -u
cd "$(dirname "$0")/.." || exit 1
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
. tools/long_runs_lib.sh

if ! shipped; then
    step "shipping runs/pretrain_mixed/best.pt as the bundled pretrained model"
    # the model it replaces (configs/pretrain_cpu_small.yaml), kept for the comparisons below
    [ -f runs/pretrained_cpu_small.pt ] || cp forcefield_et/checkpoints/pretrained.pt runs/pretrained_cpu_small.pt
    .venv/bin/forcefield-et export --model runs/pretrain_mixed/best.pt --format checkpoint \
        --card configs/pretrained_mixed_card.yaml --out forcefield_et/checkpoints/pretrained.pt || exit 1
    # the model card page and its results file follow the bundled checkpoint (the docs test checks both)
    .venv/bin/python -m benchmarks.model_card --metrics runs/pretrain_mixed/metrics.csv >> runs/after_pretraining.log 2>&1
fi
step "committee-driven frame selection against random frames (aspirin, 25 + 25)"
# once: its result file is committed (the committees and MD runs are not)
[ -f benchmarks/results/selection_demo/selection_demo.json ] ||
    .venv/bin/python -m benchmarks.selection_demo >> runs/selection_demo.log 2>&1
# the NVE energy drift of the shipped model, float32 and float64, unless benchmarks/results/nve_drift.json holds it
if ! .venv/bin/python -c "import hashlib, json, sys
ran = json.load(open('benchmarks/results/nve_drift.json'))['model_checkpoint']['sha256']
sys.exit(ran != hashlib.sha256(open('forcefield_et/checkpoints/pretrained.pt', 'rb').read()).hexdigest())"; then
    step "NVE drift of the shipped model"
    .venv/bin/python -m benchmarks.nve_drift >> runs/after_pretraining.log 2>&1
fi
step "the shipped model and the run's snapshots on drug-like molecules in no shared file"
[ -f benchmarks/results/fresh_molecules/fresh_molecules.json ] ||
    .venv/bin/python -m benchmarks.fresh_molecules --models pretrained runs/pretrain_cpu_small/best.pt \
    runs/pretrain_mixed/snapshots/step_3125.pt \
    runs/pretrain_mixed/snapshots/step_14063.pt runs/pretrain_mixed/snapshots/step_31250.pt \
    runs/pretrain_mixed/snapshots/step_56250.pt >> runs/fresh_molecules.log 2>&1
step "converged fine-tuning, pretrained-start cells: 50 frames, without and with replay"
study --starts pretrained --sizes 50
study --starts pretrained --sizes 50 --replay
study --starts pretrained --sizes 50 --replay --lr 1e-3   # both lowered the snapshot's validation error
step "converged 1000-frame models of aspirin and ethanol: cells, export, 300 ps MD at 500 K"
converged_models aspirin ethanol
step "converged 1000-frame models of naphthalene and salicylic acid: the variant aspirin and ethanol chose"
study --molecules naphthalene --starts pretrained --sizes 1000
converged_models naphthalene salicylic
step "pretraining-scaling curve, with the queue: each core takes the cells the other is not training"
.venv/bin/python -m benchmarks.pretrain_scaling --sizes 50 >> runs/pretrain_scaling.log 2>&1
.venv/bin/python -m benchmarks.pretrain_scaling >> runs/pretrain_scaling.log 2>&1
step "converged fine-tuning: the chosen 50-frame cells after the molecule's own GFN2-xTB stage (with the queue)"
xtb_stage_cells pretrained aspirin ethanol naphthalene salicylic
# the same from scratch (the stage trains the scratch ET first): what the general pretraining adds to it
xtb_stage_cells scratch aspirin ethanol
step "peers, with the queue: each core trains the models and runs the MD the other is not (the queue summarises)"
peers_finished || .venv/bin/python -m benchmarks.peers >> runs/peers.log 2>&1
step "converged fine-tuning: the chosen 50-frame cells with a 2 CPU-hour budget (with the queue)"
longer_budget_cells 2 pretrained --xtb naphthalene   # the one GFN2-xTB-stage cell above MACE's 50-frame figure
longer_budget_cells 2 pretrained aspirin ethanol naphthalene salicylic
step "converged fine-tuning: the chosen scratch 50-frame cells with a 2 CPU-hour budget too (the pretraining gain at equal budgets)"
longer_budget_cells 2 scratch aspirin ethanol naphthalene salicylic
step "converged fine-tuning: naphthalene's chosen GFN2-xTB-stage cell after a stage of 2 CPU-hours (with the queue; the 0.5-hour stage stopped on its budget)"
variant_cells "xtb_stage_hours=2" pretrained --xtb naphthalene   # the one stage cell still above MACE's 50-frame figure
step "converged fine-tuning: the chosen 50-frame cells with best.pt, the schedule and early stopping following the validation force MAE (with the queue)"
variant_cells "select_by='force-mae'" pretrained aspirin ethanol naphthalene salicylic
variant_cells "select_by='force-mae'" scratch aspirin ethanol
step "300 ps MD replicas (seeds 1, 2) of the converged scratch-start models, aspirin and salicylic acid (with the queue)"
md_replicas et-converged-scratch \
    --model-path "et-converged-scratch=runs/finetune_converged/exported/rmd17-{molecule}-scratch.pt"
step "after pretraining: done"
