#!/usr/bin/env bash
# Create or refresh .venv/ at the repository root from the lockfile (uv.lock), with every extra
# the main job and the test suite need. Safe to run again: it only changes what differs.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
# --locked: fail rather than silently re-resolve if pyproject.toml and uv.lock disagree.
# --compile-bytecode (and compileall for the package itself): where PYTHONDONTWRITEBYTECODE is set (containers, CI)
# Python would otherwise compile torch, transformers and TensorFlow from source again in every process, ~8 s more
# for each script start on 2 cores (and every test that starts one).
uv sync --locked --all-extras --quiet --compile-bytecode
.venv/bin/python -m compileall -q -j 0 prismatic >/dev/null
echo "environment ready: $(.venv/bin/python -c 'import torch, transformers, timm; print(f"torch {torch.__version__}, transformers {transformers.__version__}, timm {timm.__version__}")')"
