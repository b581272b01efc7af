#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc from PyPI wheels) into .toolchain/cuda-venv, a
# git-ignored folder of this project. Idempotent: a second run that finds nvcc working does nothing.
# build.rs finds nvcc there on its own (after NVCC, CUDA_HOME and PATH).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.toolchain/cuda-venv"
nvcc="$venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc"
# shellcheck disable=SC2086
if ls $nvcc >/dev/null 2>&1 && $nvcc --version >/dev/null 2>&1; then
  echo "cuda toolchain: already installed ($(ls $nvcc))"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 'nvidia-cuda-cccl>=13.0,<13.1'
# shellcheck disable=SC2086
ls $nvcc >/dev/null
# shellcheck disable=SC2086
$nvcc --version | tail -n 2
echo "cuda toolchain: installed into $venv"
