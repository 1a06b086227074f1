#!/usr/bin/env bash
# Set up .venv/ (scripts/setup.sh, all extras incl. LIBERO), prepare LIBERO's headless rendering and
# assets (scripts/libero/setup_libero.sh), then run the whole test suite with two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/libero/setup_libero.sh >/dev/null
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -p no:cacheprovider --durations=15 "$@"
