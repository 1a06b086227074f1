"""What every benchmark script reports with its numbers: the machine, library versions, the command, and on
a GPU the two ceilings measured in the same run (device-memory bandwidth, bf16 matrix rate)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core peak by GPU name (vendor datasheets, no sparsity): the MFU convention's denominator.
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0,
                         "H100 PCIe": 756.0, "A100": 312.0}  # fmt: skip


def machine_info(device: str) -> dict:
    import timm
    import transformers

    import prismatic

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "prismatic": prismatic.__version__,
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, sms=props.multi_processor_count)  # fmt: skip
    return info


def datasheet_bf16_tflops(gpu_name: str) -> float | None:
    for key, tflops in DATASHEET_BF16_TFLOPS.items():
        if key in gpu_name:
            return tflops
    return None


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def gpu_ceilings(repeats: int = 10) -> dict:
    """Measured once per run (METHOD.md): a 2 GiB device-to-device copy (bytes read + written) and an
    8192^3 bf16 matrix product on random data, each the median of `repeats` after warm-up."""

    def median_seconds(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return sorted(times)[len(times) // 2]

    src = torch.randn(2**29, device="cuda")  # 2 GiB of fp32
    dst = torch.empty_like(src)
    copy_s = median_seconds(lambda: dst.copy_(src))
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mm_s = median_seconds(lambda: a @ b)
    return {"copy_bandwidth_gb_s": round(2 * 2**31 / copy_s / 1e9, 1), "bf16_matmul_tflops": round(2 * 8192**3 / mm_s / 1e12, 1)}


def timed(fns: list, device: str, warmup: int, iters: int) -> list[list[float]]:
    """Wall time of each function, called in alternation so that load from other processes hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, times in zip(fns, out):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
    return out


def write_report(path: Path, report: dict) -> None:
    """The JSON report, written atomically, with the command line that produced it."""
    from prismatic.util.io import atomic_write_json

    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **report}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)
    print(json.dumps(report, indent=2))
