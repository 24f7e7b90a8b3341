#!/usr/bin/env bash
# Set up (see install.sh) and run the test-suite. Extra arguments go to pytest.
#
#   bash scripts/test.sh            # the default suite (well under 15 minutes on 2 cores)
#   bash scripts/test.sh -m slow    # only the long end-to-end suites
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
