#!/bin/bash
# The converged comparison in the paper's regime: stage 2 sees only the round's captions (no SFT copy), and
# 12 SFT epochs teach round 0 the description format. Per seed: round 0 at 16 epochs, round 1, round 0 at 32
# (the compute control), round 2. Rows land in OUT/results.jsonl (docs/results.md).
#   experiments/paper_regime.sh SEED OUT FOUNDATION
set -euo pipefail
s=$1; out=$2; fnd=$3
cd "$(dirname "$0")/.."
P=(experiments/probe_budget.py --out "$out" --seed "$s" --n-pretrain 1000 --foundation "$fnd"
   --world '{"name_prob":0.5}' --recipe '{"sft_in_pretrain":0.0,"epochs_sft":12}')
.venv/bin/python "${P[@]}" sweep --epochs 16
.venv/bin/python "${P[@]}" loop --epochs 16 --rounds 1
.venv/bin/python "${P[@]}" sweep --epochs 32
.venv/bin/python "${P[@]}" loop --epochs 16 --rounds 2
