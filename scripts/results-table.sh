#!/usr/bin/env bash
# Trains independent, joint and MT-CooL (vanilla / noreg / full) on one task for 3 seeds and prints the
# markdown results table. Usage: scripts/results-table.sh TASK EPOCHS RUNS_DIR [extra train flags...]
# e.g. scripts/results-table.sh fundus 8 runs/fundus-table
set -euo pipefail
cd "$(dirname "$0")/.."
task="$1"; epochs="$2"; runs="$3"; shift 3
mkdir -p "$runs"
# A private copy: rebuilding the project while the table runs must not change the binary mid-table.
# MTCOOL_BIN (with MTCOOL_COMMIT) uses a binary built elsewhere, e.g. from a clean worktree.
if [ -n "${MTCOOL_BIN:-}" ]; then
  cp "$MTCOOL_BIN" "$runs/mtcool-bin"
  echo "${MTCOOL_COMMIT:-unknown}" > "$runs/commit"
else
  cargo build --release -q
  cp target/release/mtcool "$runs/mtcool-bin"
  git rev-parse --short HEAD > "$runs/commit" 2>/dev/null || true
fi
rows=(
  "independent|--method independent"
  "joint|--method joint"
  "mtcool-vanilla|--method mtcool --mode vanilla"
  "mtcool-noreg|--method mtcool --mode noreg"
  "mtcool-full|--method mtcool --mode full"
)
# MultiMNIST also gets MT-CooL at Joint's parameter count (hidden widths ×0.7: 26 732 vs 27 450).
[ "$task" = multimnist ] && rows+=("mtcool-full-w0.7|--method mtcool --mode full --width 0.7")
for seed in 0 1 2; do
  for row in "${rows[@]}"; do
    name="${row%%|*}"; flags="${row#*|}"
    out="$runs/$name-s$seed"
    [ -f "$out/summary.json" ] && continue
    # shellcheck disable=SC2086
    "$runs/mtcool-bin" train --task "$task" $flags --epochs "$epochs" --seed "$seed" --device cpu --out "$out" "$@" \
      2>&1 | grep -v '^\s*$' | tail -n 3
  done
done
python3 scripts/summarize_runs.py "$runs"
