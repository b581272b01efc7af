#!/usr/bin/env bash
# CPU benchmark: the MultiMNIST training step (batch 256) of mtcool against PyTorch on the same machine,
# same threads, same initial weights and batch. Installs PyTorch (PyPI wheel) into bench/.venv if missing.
# Writes bench/results/cpu-<UTC date>-<host>.md (table + raw JSON). Usage: bench/cpu-bench.sh [STEPS]
# Needs the MNIST IDX files (MTCOOL_MNIST_DIR, default ../shared/data/mnist). Run it on a quiet machine:
# every number is a median over STEPS steps, but other load still shifts both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-30}"
venv=bench/.venv
if ! "$venv/bin/python" -c "import torch, safetensors" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # PyPI has no CPU-only Linux wheel: this is the default wheel (its CUDA libraries are not used here).
  "$venv/bin/pip" install -q torch safetensors numpy
fi
cargo build --release -q
bin=target/release/mtcool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
host=$(hostname -s 2>/dev/null || echo host)
out="bench/results/cpu-$(date -u +%Y%m%d)-$host.md"
threads=$(nproc)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "# CPU benchmark: mtcool vs PyTorch, MultiMNIST training step"
  echo
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- CPU: $cpu, $threads threads visible; torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
  echo "- batch 256, Adam lr 1e-3, b = 1e-3; median of $steps steps after 3 warm-up steps; same weights and batch"
  echo
  echo "Loss cross-check (first 3 steps from the same weights; vanilla and Joint are noise-free, full"
  echo "draws different noise in each engine):"
  echo
  echo '```'
} > "$out"
for row in "mtcool vanilla 1e-4" "joint - 1e-4" "mtcool full 1e-3"; do
  set -- $row
  dir="$work/$1-$2"
  flags=(--method "$1")
  [ "$2" != - ] && flags+=(--mode "$2")
  "$bin" bench "${flags[@]}" --steps 1 --warmup 2 --device cpu --save "$dir" > /dev/null
  echo "== $1 ${2/-/}" >> "$out"
  "$venv/bin/python" bench/torch_ref.py "$dir" --check --tol "$3" >> "$out"
done
echo '```' >> "$out"
{
  echo
  echo "| step | engine | median µs/step | images/s | mtcool speed-up |"
  echo "|---|---|---|---|---|"
} >> "$out"
raw="$work/raw.jsonl"
for row in "mtcool full" "joint -"; do
  set -- $row
  dir="$work/time-$1-$2"
  flags=(--method "$1")
  [ "$2" != - ] && flags+=(--mode "$2")
  "$bin" bench "${flags[@]}" --steps "$steps" --warmup 3 --device cpu --save "$dir" --json > "$dir.mtcool.json"
  "$venv/bin/python" bench/torch_ref.py "$dir" --time --compile --steps "$steps" --warmup 3 > "$dir.torch.json"
  python3 - "$dir.mtcool.json" "$dir.torch.json" "$1${2/#-/}" >> "$out" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2])); name = sys.argv[3].replace("mtcoolfull", "MT-CooL full")
print(f"| {name} | mtcool | {m['median_us']:.0f} | {m['images_per_s']:.0f} | |")
for r in t["rows"]:
    if "error" in r:
        print(f"| {name} | {r['engine']} | failed: {r['error']} | | |")
    else:
        print(f"| {name} | {r['engine']} | {r['median_us']:.0f} | {r['images_per_s']:.0f} | {r['median_us'] / m['median_us']:.2f}× |")
PY
  cat "$dir.mtcool.json" "$dir.torch.json" >> "$raw"
done
{
  echo
  echo "Raw reports (mtcool bench --json, torch_ref.py --time):"
  echo
  echo '```json'
  cat "$raw"
  echo '```'
} >> "$out"
echo "wrote $out"
cat "$out"
