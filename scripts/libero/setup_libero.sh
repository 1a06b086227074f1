#!/usr/bin/env bash
# Prepare a machine for LIBERO evaluation (idempotent): system libraries for headless MuJoCo rendering and
# for building egl_probe, then libero's config file and the assets link, written by prismatic's own code.
#
#   bash scripts/libero/setup_libero.sh            # after `uv sync --extra libero` (Python packages)
#   bash scripts/libero/setup_libero.sh --force    # also rewrite an existing, broken ~/.libero/config.yaml
#   PYTHON=/path/to/python bash scripts/libero/setup_libero.sh   # another environment than ./.venv
#
# Python packages are NOT installed here: they come from the project's `libero` extra.
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
FORCE=False
[[ "${1:-}" == "--force" ]] && FORCE=True

# EGL (Mesa, renders on CPU), OSMesa as the fallback, and cmake + a C compiler for the egl_probe sdist.
PKGS=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 cmake build-essential)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! "$PYTHON" -c "import libero" 2>/dev/null; then
  echo "the libero package is not installed in $PYTHON: run \`uv sync --extra libero\` first, then rerun this" >&2
  exit 1
fi

# Writes the config (LIBERO_CONFIG_PATH or ~/.libero), links the assets into libero's package folder,
# then builds one task and renders a frame to prove the whole chain works.
MUJOCO_GL="${MUJOCO_GL:-egl}" "$PYTHON" - "$FORCE" <<'PY'
import sys

from prismatic.eval.libero import LiberoEnvFactory, prepare_libero

cfg = prepare_libero(force=sys.argv[1] == "True")
print(f"libero config: {cfg}")
factory = LiberoEnvFactory("libero_spatial", task_ids=[0])
(task,) = factory.tasks()
env = factory.make(task)
obs = env.reset(task.inits[0])
env.close()
print(f"ok: rendered {obs['image'].shape} for {task.instruction!r}")
PY
