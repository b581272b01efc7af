#!/usr/bin/env bash
# Issue 15's study, resumable (each `mtcool compare` skips runs whose summary.json exists):
#   multimnist: 1. the parameter study (b × mode, K) at Joint's parameter count, b chosen on the
#               validation split; 2. the comparison table with that b;
#   fundus, fundus-av: the comparison table on the synthetic seg+cls / seg+seg images with the b
#               chosen on MultiMNIST (run the multimnist stage first).
#
#   scripts/protocol-study.sh [multimnist|fundus|fundus-av] [OUT]   (default OUT = docs/results/protocol)
#
# Protocol (PROTO below): 10 000 MultiMNIST training pairs of which 10 % are held out for validation,
# the full 10 000-pair test split, 30 epochs, Adam lr 1e-3 with step decay ×0.85 every 10 epochs,
# batch 256; every table reads each run's best validation epoch (and table-last.md its last).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-multimnist}
OUT=${2:-docs/results/protocol}
BIN=${MTCOOL:-target/release/mtcool}
PROTO=(--epochs 30 --limit-train 10000 --val-fraction 0.1 --lr-schedule step --lr-decay 0.85 --lr-decay-every 10 --device cpu)
SWEEP_SEEDS=${SWEEP_SEEDS:-2}
TABLE_SEEDS=${TABLE_SEEDS:-3}
BASELINES="independent,joint,pcgrad,cagrad,mgda,graddrop,mtan,ctan"
mtcool_rows() { # every MT-CooL row at b = $1, at its own width and at Joint's parameter count
  echo "mtcool-vanilla,mtcool-noreg+b=$1,mtcool-full+b=$1,mtcool-vanilla+match,mtcool-noreg+b=$1+match,mtcool-full+b=$1+match"
}

if [ "$STAGE" != multimnist ]; then
  # Synthetic fundus images (1000 train of which 10 % validation, 200 test, 64²), batch 16, lr 2e-3.
  B=$(cat "$OUT/chosen-b.txt" | awk '{print $NF}')
  FPROTO=(--epochs 30 --val-fraction 0.1 --lr-schedule step --lr-decay 0.85 --lr-decay-every 10 --device cpu)
  "$BIN" compare --task "$STAGE" --seeds "$TABLE_SEEDS" --out "$OUT/compare-$STAGE" \
    --methods "$BASELINES,$(mtcool_rows "$B")" -- "${FPROTO[@]}"
  exit 0
fi

bs=(1e-4 3e-4 1e-3 3e-3 1e-2 3e-2)
rows=mtcool-vanilla+match
for mode in noreg full; do
  for b in "${bs[@]}"; do rows+=",mtcool-$mode+b=$b+match"; done
done
rows+=",mtcool-full+noise-samples=2+match,mtcool-full+noise-samples=4+match"
"$BIN" compare --task multimnist --seeds "$SWEEP_SEEDS" --out "$OUT/sweep-multimnist" --methods "$rows" -- "${PROTO[@]}"

# b for the table: the best mean validation score (both tasks' accuracy) over the full-mode rows.
B=$(python3 - "$OUT/sweep-multimnist/results.json" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
def score(run):
    v = run["best_val_metrics"]
    return (v[0]["acc"] + v[1]["acc"]) / 2
best = max((r for r in rows if r["name"].startswith("mtcool-full+b=")),
           key=lambda r: sum(map(score, r["runs"])) / len(r["runs"]))
print(best["name"].split("+b=")[1].split("+")[0])
EOF
)
echo "b chosen on validation: $B" | tee "$OUT/chosen-b.txt"

"$BIN" compare --task multimnist --seeds "$TABLE_SEEDS" --out "$OUT/compare-multimnist" \
  --methods "$BASELINES,$(mtcool_rows "$B")" -- "${PROTO[@]}"
