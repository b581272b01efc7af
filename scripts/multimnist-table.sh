#!/usr/bin/env bash
# Trains every method of the MultiMNIST results table (docs/results-multimnist.md) for 3 seeds and
# prints the table. Usage: scripts/multimnist-table.sh [EPOCHS] [RUNS_DIR]   (extra flags: $TRAIN_FLAGS)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-8}"
runs="${2:-runs/table}"
cargo build --release -q
mkdir -p "$runs"
# A private copy: rebuilding the project while the table runs must not change the binary mid-table.
cp target/release/mtcool "$runs/mtcool-bin"
git rev-parse --short HEAD > "$runs/commit" 2>/dev/null || true
bin="$runs/mtcool-bin"
# Method rows: name and flags. mtcool-full-w0.7 (width 0.7) has about Joint's parameter count.
rows=(
  "independent|--method independent"
  "joint|--method joint"
  "mtcool-vanilla|--method mtcool --mode vanilla"
  "mtcool-noreg|--method mtcool --mode noreg"
  "mtcool-full|--method mtcool --mode full"
  "mtcool-full-w0.7|--method mtcool --mode full --width 0.7"
)
for seed in 0 1 2; do
  for row in "${rows[@]}"; do
    name="${row%%|*}"; flags="${row#*|}"
    out="$runs/$name-s$seed"
    [ -f "$out/summary.json" ] && continue
    # shellcheck disable=SC2086
    $bin train $flags --epochs "$epochs" --seed "$seed" --device cpu --out "$out" ${TRAIN_FLAGS:-} 2>&1 | grep -v '^\s*$' | tail -n 2
  done
done
python3 scripts/summarize_runs.py "$runs"
