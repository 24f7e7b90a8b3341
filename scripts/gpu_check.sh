#!/usr/bin/env bash
# One short GPU check of distill, never part of CI: bf16 generation through the hf backend
# and LoRA SFT through distill.train, on Qwen2.5-0.5B- and -1.5B-sized models with random
# weights; one table, JSON in $OUT/gpu_check.json (else ./gpu_check.json). Under 8 minutes,
# this set-up included (scripts/gpu_check.py says what is measured and how).
#
#   bash scripts/gpu_check.sh                  # on a GPU machine
#   bash scripts/gpu_check.sh --tiny           # on a CPU: tiny models, the same code paths
#   bash scripts/gpu_check.sh --fetch-wheels   # here, with a package registry: wheels into
#                                              # .whl/ for a GPU machine that has none
#   bash scripts/gpu_check.sh --bench-train    # instead: padded vs padding-free LoRA SFT of
#                                              # the 1.5B shape, tokens/s, memory and MFU
#                                              # (scripts/bench_train.py, 2 repeats, ~4 min)
#
# Python: $PYTHON, else ./.venv/bin/python, else python3, the first that imports torch
# (torch must be there already: it has to be the machine's own CUDA build). Missing
# packages come from the wheels in ${GPU_CHECK_WHEELS:-.whl}/ when there are any
# (installed into a temporary directory on PYTHONPATH), else from the registry with pip
# when it answers (not tried with GPU_CHECK_OFFLINE=1); if neither gives them, the script
# names them and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
export GPU_CHECK_STARTED=${GPU_CHECK_STARTED:-$(date +%s)}  # the 8 minutes start here
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1
wheels=${GPU_CHECK_WHEELS:-.whl}

say() { echo "gpu_check.sh: $*" >&2; }

# ---- Python: the first candidate that has torch
py=
for candidate in ${PYTHON:-} .venv/bin/python python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" 2>/dev/null; then
    py=$candidate
    break
  fi
done

# ---- --fetch-wheels: download, here, what a GPU image usually lacks (as README of the
# device tool describes: binary wheels for the GPU machine's Python, no dependencies)
if [ "${1:-}" = "--fetch-wheels" ]; then
  [ -n "$py" ] || { say "no python with torch here"; exit 2; }
  target_python=${GPU_CHECK_PYTHON_VERSION:-3.12}
  # What the CUDA image the device tool lends lacks (its KINDS.md lists what it holds),
  # with what they need at versions that image may not have, pinned to the versions this
  # checkout is tested with where this Python has them.
  specs=$("$py" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
for name in ("trl", "datasets", "dill", "multiprocess", "fsspec", "pydantic",
             "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
)
  mkdir -p "$wheels"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
  # shellcheck disable=SC2086  # one requirement per word
  "$py" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version "$target_python" --implementation cp "${platforms[@]}" \
    -d "$wheels" $specs || { say "pip download failed"; exit 2; }
  say "wheels for Python $target_python in $wheels/ ($(du -sh "$wheels" | cut -f1)):"
  ls "$wheels" >&2
  exit 0
fi

[ -n "$py" ] || { say "no python with torch found (tried ${PYTHON:-} .venv/bin/python python3 python)"; exit 2; }
say "python: $py ($("$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"

# ---- what is missing, and where it can come from
site=
trap '[ -z "$site" ] || rm -rf "$site"' EXIT
missing=$("$py" scripts/gpu_check.py --check-env)
status=$?
if [ "$status" = 4 ]; then exit 2; fi
if [ "$status" != 0 ] && compgen -G "$wheels/*.whl" >/dev/null; then
  site=$(mktemp -d /tmp/gpu_check-site.XXXXXX)
  say "installing the wheels in $wheels/ into $site"
  "$py" -m pip install --disable-pip-version-check -q --no-index --no-deps --no-compile \
    --no-cache-dir --target "$site" "$wheels"/*.whl || say "installing the wheels failed"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  missing=$("$py" scripts/gpu_check.py --check-env)
  status=$?
fi
if [ "$status" != 0 ] && [ -z "${GPU_CHECK_OFFLINE:-}" ]; then
  say "missing: $(echo $missing); trying the package registry"
  keep=$(mktemp /tmp/gpu_check-constraints.XXXXXX)  # pip must not replace the CUDA torch
  "$py" -c 'import torch; print("torch==" + torch.__version__)' >"$keep"
  # shellcheck disable=SC2086  # one requirement per word
  timeout 300 "$py" -m pip install --disable-pip-version-check -q --timeout 10 --retries 1 \
    -c "$keep" $missing || say "pip install failed (no registry reachable?)"
  rm -f "$keep"
  missing=$("$py" scripts/gpu_check.py --check-env)
  status=$?
fi
if [ "$status" != 0 ]; then
  say "cannot run: missing Python packages: $(echo $missing)."
  say "Carry wheels (bash scripts/gpu_check.sh --fetch-wheels, where a registry answers) or install them."
  exit 2
fi

if [ "${1:-}" = "--bench-train" ]; then
  shift
  exec "$py" scripts/bench_train.py --model qwen2.5-1.5b --repeats 2 \
    --out "${OUT:-.}/bench_train.json" "$@"
fi
"$py" scripts/gpu_check.py "$@"
