#!/usr/bin/env bash
# Set up (see install.sh) and run the quickstart recipe: the whole distillation loop on
# the microworld, on a CPU, in a few minutes. Extra arguments go to `distill run`.
#
#   bash scripts/quickstart.sh [key.sub=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/distill run recipes/quickstart.yaml "$@"
