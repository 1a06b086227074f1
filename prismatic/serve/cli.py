"""`prismatic-serve` / `python vla-scripts/serve.py`: serve a checkpoint on one port in three protocols.

    prismatic-serve --checkpoint /ckpts/openvla-7b --unnorm_key bridge_orig            # 127.0.0.1:8000
    prismatic-serve --checkpoint runs/my-run --host 0.0.0.0 --token "$SECRET" --load_in_4bit true

Order of work: settings are validated and the port is bound before the model loads (seconds, not a
failed start after minutes of loading); then the model loads; then uvicorn serves until SIGTERM/SIGINT,
finishing requests in flight. All flags: `ServeConfig` (prismatic/serve/config.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from prismatic.serve.config import ServeConfig
from prismatic.serve.model import ServedModel

log = logging.getLogger("prismatic.serve")


def resolve_device_dtype(config: ServeConfig) -> tuple[str, object]:
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} but torch sees no CUDA device; use --device cpu")
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def load_model(config: ServeConfig) -> ServedModel:
    """Load `config.checkpoint` (anything `load_vla` reads) as the server's model."""
    from prismatic.models.load import load_vla

    device, dtype = resolve_device_dtype(config)
    if config.quantize is not None:
        from prismatic.models.quantization import require_bitsandbytes

        try:  # one small quantised layer on the device, before the model is read
            require_bitsandbytes(config.quantize, device, flag=f"--load_in_{config.quantize}")
        except (ImportError, RuntimeError) as e:
            raise ValueError(str(e)) from None
    log.info("loading %s on %s (%s%s)", config.checkpoint, device, str(dtype).replace("torch.", ""),
             "" if config.quantize is None else f", {config.quantize}")  # fmt: skip
    vla = load_vla(config.checkpoint, device=device, dtype=dtype, tokenizer=config.tokenizer or None,
                   quantize=config.quantize, decode=config.decode)  # fmt: skip
    name = Path(config.checkpoint).expanduser().resolve().name
    return ServedModel(vla, name, default_unnorm_key=config.unnorm_key or None, gripper=config.gripper)


def main(argv: Sequence[str] | None = None) -> None:
    import draccus

    config = draccus.parse(ServeConfig, args=list(sys.argv[1:] if argv is None else argv))
    try:
        config.validate()
        logging.basicConfig(
            level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        try:
            from prismatic.serve.app import create_app
            from prismatic.serve.server import bind, run
        except ImportError as e:
            raise ValueError(f"the server needs the `serve` extra ({e}): uv sync --extra serve, or "
                             "pip install 'prismatic[serve]'") from None  # fmt: skip
        sock = bind(config.host, config.port)
        if not config.loopback:
            log.warning(
                "listening on %s: every machine that can reach it can drive this policy%s",
                config.host,
                "" if config.token or _env_token() else " (no --token set: anyone may send requests)",
            )
        model = load_model(config)
        app = create_app(model, config)
    except (ValueError, OSError, KeyError) as e:  # CheckpointError is a FileNotFoundError (OSError)
        print(f"prismatic-serve: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    routes = {"rest": "POST /act", "openpi": "ws /openpi", "vla-eval": "ws /vla-eval"}
    log.info("starting on http://%s:%d (%s, ws / = %s, GET /health, GET /config)", config.host,
             sock.getsockname()[1], ", ".join(routes[p] for p in config.protocols), config.ws_root)  # fmt: skip
    run(app, config, sock)


def _env_token() -> str:
    import os

    from prismatic.serve.protocol import TOKEN_ENV

    return os.environ.get(TOKEN_ENV, "")


if __name__ == "__main__":
    main()
