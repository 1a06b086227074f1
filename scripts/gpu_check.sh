#!/usr/bin/env bash
# The GPU measurements of issue 15 in one run: under 10 minutes on one H100 or H200, JSON under bench_results/gpu/.
#
#   bash scripts/gpu_check.sh --prepare   # HERE, once, with PyPI access: the packages the device lacks -> .gpu_deps/
#   bash scripts/gpu_check.sh             # ON THE DEVICE, through the device tool:
#                                         #   run(command="bash scripts/gpu_check.sh", carry=[".gpu_deps"], timeout_s=600)
#   bash scripts/gpu_check.sh --smoke     # any CPU: every part on the tiny model (checks the script and benchmarks)
#
# What the device machine has (.library/device/KINDS.md): a bare, offline image whose python3 holds torch 2.11+cu130,
# transformers 5.17, timm, peft, accelerate, safetensors, tokenizers, numpy, pillow, scipy; no bitsandbytes, no
# draccus, and other versions than uv.lock. So do NOT carry .venv (built for this machine's Python, ~5 GB), and
# `uv sync` cannot run there (no network). --prepare downloads (CPython 3.12, x86-64 manylinux) the uv.lock versions,
# read from .venv, of transformers, timm, peft, draccus and its needs the image lacks (mergedeep, toml) as wheels,
# and bitsandbytes unpacked with only its CUDA 13 and CPU libraries (its wheel is 43 MB: with the repository, ~28 MB,
# it would exceed the 64 MiB one call carries). Into .gpu_deps/ (git-ignored; ~20 MB). On the device this script
# installs them into /tmp/site (pip --no-index) and puts that first on PYTHONPATH. torch stays the image's (a CUDA
# build of the locked 2.14 is ~1 GB); every JSON records the versions that ran.
#
# Parts, in priority order, each under its own time limit so that one hang costs only its own budget; no part runs
# past 540 s from the start (set-up included), so the run ends inside the device's 600 s command limit. To rerun some
# parts only (e.g. after a failure): ONLY=train_7b_lora,inference_7b_4bit bash scripts/gpu_check.sh
# All models are built on the meta device and
# materialised on the GPU with random weights (prismatic.models.load.build_random_on_device; seconds, no checkpoint):
#   inference_7b_bf16   150 s  openvla-7b bf16, batch 1 and 8: generate vs eager vs static vs graphs, identical tokens
#   heads_7b             60 s  actions/s of the heads on one 7B backbone (OFT's LIBERO inputs: 2 images + proprio):
#                              bins (7 decoding steps) vs l1-regression and bins-parallel (chunks of 8, one pass)
#   train_7b_lora        80 s  LoRA r=32 on all linear layers, bf16 base, batch 16, activation checkpointing
#   train_1b_fsdp        60 s  full_shard FSDP2 of a 1.25B VLA (DINOv2+SigLIP, Qwen2.5-0.5B), batch 16: tokens/s, MFU
#   inference_7b_4bit    90 s  NF4 weights, batch 1 and 8: weight memory, actions/s (CUDA graphs tried)
#   train_7b_qlora4      80 s  the LoRA step on a 4-bit base (QLoRA)
#   inference_7b_8bit   100 s  LLM.int8 weights, batch 1 and 8: weight memory, actions/s
#   train_1b_fsdp_ac     60 s  the FSDP step with activation checkpointing (the trainer's default)
# Output: bench_results/gpu/<part>.json (machine, versions, command, numbers), <part>.log, status.jsonl, summary.txt;
# with $OUT set (the device tool) they are packed into $OUT/gpu_results.tar.gz and the summary copied beside it.
# Afterwards: put the numbers in docs/benchmarks.md and the README's tables, with the GPU's name.
set -uo pipefail
START=$SECONDS  # the deadline counts the set-up too
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=${1:-device}

prepare() {
  local py=.venv/bin/python tmp=.gpu_deps.tmp
  [ -x "$py" ] || { echo "no .venv: run bash scripts/setup.sh first (versions are read from it)"; exit 2; }
  local pins
  pins=$("$py" - <<'EOF'
import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("transformers", "timm", "peft", "draccus", "mergedeep", "toml", "bitsandbytes")))
EOF
)
  echo "downloading: $pins"
  rm -rf "$tmp" && mkdir -p "$tmp/site"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$tmp" $pins || exit 1
  python3 - "$tmp" <<'EOF'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
(wheel,) = tmp.glob("bitsandbytes-*.whl")
with zipfile.ZipFile(wheel) as z:  # keep the Python code and the CUDA 13 / CPU libraries (torch is cu130 there)
    keep = [n for n in z.namelist() if not n.endswith(".so") or "cuda13" in n or n.endswith("_cpu.so")]
    z.extractall(tmp / "site", members=keep)
wheel.unlink()
EOF
  rm -rf .gpu_deps && mv "$tmp" .gpu_deps
  du -sh .gpu_deps
  local tree
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  echo "working tree that travels: $((tree / 1048576)) MiB + .gpu_deps $(( $(du -sb .gpu_deps | cut -f1) / 1048576 )) MiB (limit 64 MiB)"
}

if [ "$MODE" = "--prepare" ]; then prepare; exit $?; fi
if [ "$MODE" = "--help" ] || [ "$MODE" = "-h" ]; then sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0; fi

RES=${RESULTS_DIR:-bench_results/gpu}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$MODE" = "--smoke" ]; then
  RES=${RESULTS_DIR:-bench_results/gpu_smoke}
  PY=${PYTHON:-.venv/bin/python}
  DEADLINE=${DEADLINE:-3600}
elif [ "$MODE" = "device" ]; then
  PY=${PYTHON:-python3}
  DEADLINE=${DEADLINE:-540}
  [ -d .gpu_deps ] || { echo "no .gpu_deps/: run 'bash scripts/gpu_check.sh --prepare' here first, then carry .gpu_deps"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_deps/*.whl || exit 2
  cp -r .gpu_deps/site/. /tmp/site/
  export PYTHONPATH=/tmp/site:$REPO
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv  # read only
else
  echo "usage: bash scripts/gpu_check.sh [--prepare | --smoke | --help]"; exit 2
fi
[ -n "${ONLY:-}" ] || rm -rf "$RES"  # a rerun of some parts keeps the others' results
mkdir -p "$RES"
"$PY" -c "import torch, transformers, timm, bitsandbytes, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'| transformers', transformers.__version__, '| timm', timm.__version__, '| bitsandbytes', bitsandbytes.__version__, '| peft', peft.__version__)" \
  2>&1 | grep -v "kernels-community" | tee "$RES/versions.txt"

# part NAME BUDGET_S COMMAND...: run under min(budget, time left), record ok / failed / timeout / skipped.
part() {
  local name=$1 budget=$2; shift 2
  local left=$((DEADLINE - (SECONDS - START))) status rc t0=$SECONDS
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    return
  elif [ "$left" -lt 30 ]; then
    status="skipped: ${left}s left of the ${DEADLINE}s run"
  else
    local limit=$((budget < left - 10 ? budget : left - 10))
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$RES/$name.log" 2>&1
    rc=$?
    case $rc in 0) status=ok ;; 124|137) status="timeout after ${limit}s" ;; *) status="failed (exit $rc)" ;; esac
    tail -n 4 "$RES/$name.log" | sed 's/^/   /'
  fi
  echo "   -> $name: $status ($((SECONDS - t0))s)"
  printf '{"part": "%s", "status": "%s", "seconds": %d}\n' "$name" "$status" $((SECONDS - t0)) >> "$RES/status.jsonl"
}

INF="$PY scripts/bench_inference.py"
TRAIN="$PY scripts/bench_train.py"
HEADS="$PY scripts/bench_heads.py"
if [ "$MODE" = "device" ]; then
  part inference_7b_bf16 150 $INF --model 7b --device cuda --dtype bfloat16 --batch-sizes 1,8 --iters 15 --warmup 3 --out "$RES/inference_7b_bf16.json"
  part heads_7b 60 $HEADS --model 7b --device cuda --dtype bfloat16 --cameras primary,wrist --proprio-dim 8 --chunk-len 8 --batch-sizes 1,8 --iters 15 --warmup 3 --out "$RES/heads_7b.json"
  part train_7b_lora 80 $TRAIN --model 7b --device cuda --lora-rank 32 --batch 16 --act-ckpt on --iters 5 --warmup 2 --out "$RES/train_7b_lora.json"
  part train_1b_fsdp 60 $TRAIN --model 1b --device cuda --fsdp --batch 16 --act-ckpt off --variants ours --iters 8 --warmup 2 --out "$RES/train_1b_fsdp.json"
  part inference_7b_4bit 90 $INF --model 7b --device cuda --dtype bfloat16 --quantize 4bit --batch-sizes 1,8 --iters 6 --warmup 1 --out "$RES/inference_7b_4bit.json"
  part train_7b_qlora4 80 $TRAIN --model 7b --device cuda --lora-rank 32 --lora-quant 4bit --batch 16 --act-ckpt on --variants ours --iters 4 --warmup 1 --out "$RES/train_7b_qlora4.json"
  part inference_7b_8bit 100 $INF --model 7b --device cuda --dtype bfloat16 --quantize 8bit --batch-sizes 1,8 --modes generate,eager,static --iters 4 --warmup 1 --out "$RES/inference_7b_8bit.json"
  part train_1b_fsdp_ac 60 $TRAIN --model 1b --device cuda --fsdp --batch 16 --act-ckpt on --variants ours --iters 8 --warmup 2 --out "$RES/train_1b_fsdp_ac.json"
else  # --smoke: the same parts on the tiny model, on the CPU
  part inference_7b_bf16 600 $INF --model tiny --device cpu --batch-sizes 1,2 --iters 2 --warmup 1 --out "$RES/inference_7b_bf16.json"
  part heads_7b 600 $HEADS --model tiny --device cpu --chunk-len 8 --batch-sizes 1,2 --iters 2 --warmup 1 --out "$RES/heads_7b.json"
  part train_7b_lora 600 $TRAIN --model tiny --device cpu --lora-rank 32 --batch 4 --act-ckpt on --iters 2 --warmup 1 --out "$RES/train_7b_lora.json"
  part train_1b_fsdp 600 $TRAIN --model tiny --device cpu --fsdp --batch 4 --act-ckpt off --variants ours --iters 2 --warmup 1 --out "$RES/train_1b_fsdp.json"
  part inference_7b_4bit 600 $INF --model tiny --device cpu --quantize 4bit --batch-sizes 1,2 --iters 2 --warmup 1 --out "$RES/inference_7b_4bit.json"
  part train_7b_qlora4 600 $TRAIN --model tiny --device cpu --lora-rank 32 --lora-quant 4bit --batch 4 --act-ckpt on --variants ours --iters 2 --warmup 1 --out "$RES/train_7b_qlora4.json"
  part inference_7b_8bit 600 $INF --model tiny --device cpu --quantize 8bit --batch-sizes 1,2 --modes generate,eager,static --iters 2 --warmup 1 --out "$RES/inference_7b_8bit.json"
  part train_1b_fsdp_ac 600 $TRAIN --model tiny --device cpu --fsdp --batch 4 --act-ckpt on --variants ours --iters 2 --warmup 1 --out "$RES/train_1b_fsdp_ac.json"
fi

"$PY" scripts/gpu_check_summary.py "$RES" | tee "$RES/summary.txt"
echo "total $((SECONDS - START))s; results in $RES/"
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu_results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")" && cp "$RES/summary.txt" "$OUT/"
fi
