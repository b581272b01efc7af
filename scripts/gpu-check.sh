#!/usr/bin/env bash
# The project's GPU check: every kernel against its CPU reference, compute-sanitizer (memcheck,
# racecheck, initcheck) over that suite, and the build's kernel report, written as one dated markdown
# file. The GPU hosts have no Rust, so it runs in two halves:
#   here (with Rust):   scripts/gpu-check.sh prepare        builds, fills gpu-bundle/ (git-ignored)
#   on the GPU host:    scripts/gpu-check.sh run [OUTDIR]   writes OUTDIR/gpu-check-<date>.md
# With the device tool: run `prepare`, then run `scripts/gpu-check.sh run "$OUT"` there with
# carry ["gpu-bundle"], then copy the file into bench/results/ and commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=gpu-bundle

case "${1:-}" in
prepare)
  ./scripts/install-cuda-toolchain.sh
  cargo build --release
  rm -rf "$bundle" && mkdir -p "$bundle"
  cp target/release/mtcool "$bundle/"
  git rev-parse HEAD > "$bundle/commit" 2>/dev/null || echo unknown > "$bundle/commit"
  ./target/release/mtcool info > "$bundle/info.txt"
  mnist="${MTCOOL_MNIST_DIR:-../shared/data/mnist}"
  if [ -d "$mnist" ]; then mkdir -p "$bundle/mnist" && cp "$mnist"/*.gz "$bundle/mnist/"; fi
  du -sh "$bundle"
  ;;
run)
  out="${2:-bench/results}"
  mkdir -p "$out"
  bin="$bundle/mtcool"
  report="$out/gpu-check-$(date -u +%Y-%m-%d).md"
  {
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- commit: $(cat "$bundle/commit")"
    echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
    echo "- command: scripts/gpu-check.sh run"
    echo
    echo "## Kernels (ptxas report of this build)"
    echo '```'
    cat "$bundle/info.txt"
    echo '```'
    echo
    echo "## Parity: every kernel vs the CPU reference"
    echo '```'
    "$bin" check parity --device cuda 2>&1 | tail -n 400 || echo "PARITY FAILED (exit $?)"
    echo '```'
    for tool in memcheck racecheck initcheck; do
      echo
      echo "## compute-sanitizer --tool $tool"
      echo '```'
      compute-sanitizer --tool "$tool" --error-exitcode 99 "$bin" check parity --device cuda --json > /tmp/sanitizer-$tool.out 2>&1 \
        && echo "exit 0" || echo "exit $?"
      grep -E "ERROR SUMMARY|RACECHECK SUMMARY|========= (Invalid|Uninitialized|Error)" /tmp/sanitizer-$tool.out | head -n 40 || true
      echo '```'
    done
    echo
    echo "## PyTorch on this GPU: the MultiMNIST MT-CooL step (batch 256), the baseline for mtcool's GPU step"
    echo
    echo "mtcool's GPU training step is not built yet, so this records PyTorch alone (bench/torch_ref.py,"
    echo "same initial weights and batch as \`mtcool bench --save\`), and mtcool's CPU step on this host."
    echo '```'
    if [ -d "$bundle/mnist" ] && python3 -c "import torch, safetensors" 2>/dev/null; then
      for mode in vanilla full; do
        dir="/tmp/mtcool-bench-$mode"
        MTCOOL_MNIST_DIR="$bundle/mnist" "$bin" bench --mode "$mode" --steps 20 --warmup 3 --device cpu --save "$dir" \
          || echo "mtcool bench failed"
        [ "$mode" = vanilla ] && python3 bench/torch_ref.py "$dir" --check --device cuda --tol 1e-4
        [ "$mode" = full ] && python3 bench/torch_ref.py "$dir" --time --compile --device cuda --steps 50 --warmup 5
      done
    else
      echo "skipped: needs the MNIST files in the bundle and python3 with torch and safetensors"
    fi
    echo '```'
  } > "$report"
  echo "wrote $report"
  ;;
*)
  echo "usage: scripts/gpu-check.sh prepare | run [OUTDIR]" >&2
  exit 2
  ;;
esac
