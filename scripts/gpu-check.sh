#!/usr/bin/env bash
# The project's GPU check: every kernel against its CPU reference, compute-sanitizer (memcheck,
# racecheck, initcheck) over that suite, and the build's kernel report, written as one dated markdown
# file. The GPU hosts have no Rust, so it runs in two halves:
#   here (with Rust):   scripts/gpu-check.sh prepare        builds, fills gpu-bundle/ (git-ignored)
#   on the GPU host:    scripts/gpu-check.sh run [OUTDIR]   writes OUTDIR/gpu-check-<date>.md
# Without a GPU:        scripts/gpu-check.sh emu [OUTDIR]   the same parity check on the emulated device
#                       (emu/: all three thread orders, then the ASan build), OUTDIR/gpu-check-emu-<date>.md
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
    echo "## The MultiMNIST MT-CooL step (batch 256) on this GPU: mtcool vs PyTorch eager and torch.compile"
    echo
    echo "mtcool's step timed with CUDA events (\`mtcool bench --device cuda\`, same initial weights and batch"
    echo "as bench/torch_ref.py reads from \`--save\`), then PyTorch in the same call; vanilla also checks that"
    echo "both engines compute the same losses."
    echo '```'
    if [ -d "$bundle/mnist" ] && python3 -c "import torch, safetensors" 2>/dev/null; then
      for mode in vanilla full; do
        dir="/tmp/mtcool-bench-$mode"
        MTCOOL_MNIST_DIR="$bundle/mnist" "$bin" bench --mode "$mode" --steps 50 --warmup 5 --device cuda --save "$dir" \
          || echo "mtcool bench failed"
        [ "$mode" = vanilla ] && python3 bench/torch_ref.py "$dir" --check --device cuda --tol 1e-4
        MTCOOL_MNIST_DIR="$bundle/mnist" "$bin" bench --mode "$mode" --steps 50 --warmup 5 --device cuda --graph \
          || echo "mtcool bench --graph failed"
        python3 bench/torch_ref.py "$dir" --time --compile --device cuda --steps 50 --warmup 5
      done
      echo
      MTCOOL_MNIST_DIR="$bundle/mnist" "$bin" profile --mode full --steps 10 --device cuda || echo "mtcool profile failed"
    else
      echo "skipped: needs the MNIST files in the bundle and python3 with torch and safetensors"
    fi
    echo '```'
    echo
    echo "## A short GPU training run (synthetic fundus, MT-CooL)"
    echo '```'
    ( time "$bin" train --device cuda --task fundus --epochs 2 --out /tmp/mtcool-gpu-train ) 2>&1 | tail -n 8 \
      || echo "mtcool train failed"
    echo '```'
  } > "$report"
  echo "wrote $report"
  ;;
emu)
  ./scripts/install-cuda-toolchain.sh
  cargo build --release
  out="${2:-bench/results}"
  mkdir -p "$out"
  bin=target/release/mtcool
  report="$out/gpu-check-emu-$(date -u +%Y-%m-%d).md"
  log_check=$(mktemp) log_asan=$(mktemp)
  t0=$(date +%s)
  rc_check=0
  MTCOOL_EMU_SCHEDULE=check LD_LIBRARY_PATH=target/release/emu "$bin" check parity --device cuda > "$log_check" 2>&1 || rc_check=$?
  t1=$(date +%s)
  rc_asan=0
  LD_PRELOAD="$(g++ -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 LD_LIBRARY_PATH=target/release/emu-asan \
    "$bin" check parity --device cuda > "$log_asan" 2>&1 || rc_asan=$?
  t2=$(date +%s)
  # Before the report is opened: writing it would itself count as an uncommitted change.
  commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  git diff --quiet 2>/dev/null || commit="$commit (+ uncommitted changes)"
  {
    echo "# GPU check on the EMULATED device (no GPU) $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Every kernel of kernels/*.cu against its CPU reference, run by the unchanged mtcool binary on"
    echo "emu/'s libcuda (the CUDA source compiled for the CPU by g++). This shows indexing, bounds, barriers,"
    echo "launch wrappers and the runtime; it says nothing about speed, nvcc's code generation or the GPU"
    echo "memory model (emu/README.md). Run \`scripts/gpu-check.sh run\` on a real card for those."
    echo
    echo "- commit: $commit"
    echo "- device: $(grep -m1 '^device:' "$log_check" | sed 's/^device: //' || echo unknown)"
    echo "- machine: $(nproc) CPU cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "- command: scripts/gpu-check.sh emu"
    echo "- wall time: $((t1 - t0)) s (three thread orders per launch), $((t2 - t1)) s (AddressSanitizer build)"
    echo
    echo "## Parity, every launch in forward, reverse and random thread order (MTCOOL_EMU_SCHEDULE=check), exit $rc_check"
    echo
    echo "A race (different bytes between the orders) would fail its launch and the suite."
    echo '```'
    sed -n '/^per kernel/,$p' "$log_check"
    grep -E '^error|mtcool-emu:' "$log_check" || true
    echo '```'
    echo
    echo "## Parity on the AddressSanitizer build, exit $rc_asan"
    echo '```'
    grep -E '^(all [0-9]+ parity|error)|mtcool-emu:|ERROR: AddressSanitizer|SUMMARY' "$log_asan" || true
    echo '```'
  } > "$report"
  rm -f "$log_check" "$log_asan"
  echo "wrote $report"
  [ "$rc_check" = 0 ] && [ "$rc_asan" = 0 ]
  ;;
*)
  echo "usage: scripts/gpu-check.sh prepare | run [OUTDIR] | emu [OUTDIR]" >&2
  exit 2
  ;;
esac
