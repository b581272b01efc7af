#!/usr/bin/env bash
# CPU benchmark: the MultiMNIST training step (batch 256) and the fundus U-Net step (batch 16, 64²) of
# mtcool against PyTorch on the same machine, same threads, same initial weights and batch; and SGEMM
# 1024³ against the machine's FMA peak. Installs PyTorch (PyPI wheel) into bench/.venv if missing.
# Writes bench/results/cpu-<UTC date>-<host>.md (table + raw JSON). Usage: bench/cpu-bench.sh [STEPS] [ROUNDS]
# Needs the MNIST IDX files (MTCOOL_MNIST_DIR, default ../shared/data/mnist). Run it on a quiet machine:
# every number is a median over STEPS steps, but other load still shifts both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-30}"
rounds="${2:-3}"
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
  echo "# CPU benchmark: mtcool vs PyTorch, MultiMNIST and fundus training steps"
  echo
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- CPU: $cpu, $threads threads visible; torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
  echo "- MultiMNIST: batch 256, Adam lr 1e-3, b = 1e-3; fundus: U-Net, batch 16, 64², lr = b = 2e-3;"
  echo "  same weights and batch for both engines; same thread count"
  echo
  echo "Loss cross-check (first 3 steps from the same weights; vanilla and Joint are noise-free, full"
  echo "draws different noise in each engine):"
  echo
  echo '```'
} > "$out"
for row in "multimnist mtcool vanilla 1e-4" "multimnist joint - 1e-4" "multimnist mtcool full 1e-3" "fundus mtcool vanilla 1e-4"; do
  set -- $row
  dir="$work/$1-$2-$3"
  flags=(--task "$1" --method "$2")
  [ "$3" != - ] && flags+=(--mode "$3")
  "$bin" bench "${flags[@]}" --steps 1 --warmup 2 --device cpu --save "$dir" > /dev/null
  echo "== $1 $2 ${3/-/}" >> "$out"
  "$venv/bin/python" bench/torch_ref.py "$dir" --check --tol "$4" >> "$out"
done
echo '```' >> "$out"
{
  echo
  echo "Timing: $rounds rounds, alternating the engines (mtcool, PyTorch eager, torch.compile) so that the"
  echo "VM's background load hits all of them alike; each round's number is the median of $steps steps;"
  echo "the table gives the median over rounds (with the range)."
  echo
  echo "| step | engine | µs/step (median of rounds) | range over rounds | images/s | mtcool speed-up |"
  echo "|---|---|---|---|---|---|"
} >> "$out"
raw="$work/raw.jsonl"
for row in "multimnist mtcool full" "multimnist joint -" "fundus mtcool full"; do
  set -- $row
  dir="$work/time-$1-$2-$3"
  flags=(--task "$1" --method "$2")
  [ "$3" != - ] && flags+=(--mode "$3")
  for r in $(seq "$rounds"); do
    "$bin" bench "${flags[@]}" --steps "$steps" --warmup 3 --device cpu --save "$dir" --json > "$dir.mtcool.$r.json"
    "$venv/bin/python" bench/torch_ref.py "$dir" --time --compile --steps "$steps" --warmup 3 > "$dir.torch.$r.json"
    cat "$dir.mtcool.$r.json" "$dir.torch.$r.json" >> "$raw"
  done
  python3 - "$dir" "$rounds" "$1 $2 ${3/-/}" >> "$out" <<'PY'
import json, statistics, sys
d, rounds, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].replace("mtcool full", "MT-CooL full").strip()
m = [json.load(open(f"{d}.mtcool.{r}.json"))["median_us"] for r in range(1, rounds + 1)]
t = [json.load(open(f"{d}.torch.{r}.json")) for r in range(1, rounds + 1)]
batch = json.load(open(f"{d}.mtcool.1.json"))["batch_size"]
med = statistics.median(m)
print(f"| {name} | mtcool | {med:.0f} | {min(m):.0f}–{max(m):.0f} | {batch / med * 1e6:.0f} | |")
for i, row in enumerate(t[0]["rows"]):
    vals = [x["rows"][i].get("median_us") for x in t]
    if any(v is None for v in vals):
        print(f"| {name} | {row['engine']} | failed: {row.get('error', '?')} | | | |")
        continue
    tm = statistics.median(vals)
    # The speed-up: the median over rounds of each round's own ratio (the engines ran back to back).
    ratio = statistics.median(v / mv for v, mv in zip(vals, m))
    print(f"| {name} | {row['engine']} | {tm:.0f} | {min(vals):.0f}–{max(vals):.0f} | {batch / tm * 1e6:.0f} | {ratio:.2f}× |")
PY
done
{
  echo
  echo "SGEMM 1024³ against the FMA peak (\`mtcool profile --json\` peaks: a loop of independent vector FMAs and"
  echo "SGEMM on all threads, alternating six times, best of the 6 loops and of the 18 SGEMM calls; $rounds runs):"
  echo
  echo "| run | ISA | FMA peak GFLOP/s | SGEMM 1024³ GFLOP/s | % of peak |"
  echo "|---|---|---|---|---|"
  for r in $(seq "$rounds"); do
    MTCOOL_THREADS="$threads" "$bin" profile --steps 1 --warmup 1 --json |
      python3 -c "import json,sys; p=json.load(sys.stdin)['peaks']; print(f\"| $r | {p['isa']} | {p['fma_gflop_s']:.1f} | {p['sgemm_gflop_s']:.1f} | {100*p['sgemm_gflop_s']/p['fma_gflop_s']:.0f} % |\")"
  done
  echo
  echo "Raw reports (mtcool bench --json, torch_ref.py --time):"
  echo
  echo '```json'
  cat "$raw"
  echo '```'
} >> "$out"
echo "wrote $out"
cat "$out"
