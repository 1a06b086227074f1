#!/usr/bin/env bash
# Set up .venv/ (scripts/setup.sh) and run the whole test suite, two workers (one per CI core).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile -p no:cacheprovider "$@"
