"""`ServeConfig`: every setting of the policy server, validated (all problems at once) before a model loads."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from prismatic.models.decoding import DECODE_MODES
from prismatic.serve.model import GRIPPER_CONVENTIONS
from prismatic.serve.observation import DEFAULT_KEYS, parse_overrides

ALL_PROTOCOLS = ("rest", "openpi", "vla-eval")
WS_PROTOCOLS = ("openpi", "vla-eval")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ServeConfig:
    # fmt: off
    checkpoint: str = ""                   # HF-layout dir, native run dir or checkpoints/*.pt (what load_vla reads)
    host: str = "127.0.0.1"                # bind address; anything but loopback exposes the robot's policy (warned)
    port: int = 8000                       # one port for every protocol (0: any free port)
    device: str = "auto"                   # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    dtype: str = "auto"                    # auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16 | float16
    load_in_8bit: bool = False             # bitsandbytes 8-bit weights (LLM.int8; HF layout), as the original's flag
    load_in_4bit: bool = False             # bitsandbytes 4-bit weights (NF4; HF layout)
    decode: str = "auto"                   # auto | eager | static | graphs (prismatic/models/decoding.py)
    tokenizer: str = ""                    # tokenizer dir for run dirs of the original codebase (load_vla)
    unnorm_key: str = ""                   # dataset statistics for requests that name none
    gripper: str = "model"                 # model (as trained) | binary_close_positive (LIBERO/robosuite: -1 open, +1 close)
    protocols: list[str] = field(default_factory=lambda: list(ALL_PROTOCOLS))   # rest | openpi | vla-eval
    ws_root: str = "openpi"                # which websocket protocol also answers on "/" (openpi | vla-eval | none)
    obs_keys: list[str] = field(default_factory=list)  # PROTOCOL.FIELD=KEY overrides (prismatic/serve/observation.py)
    batch_window_ms: float = 5.0           # how long the first request of a batch waits for others
    max_batch: int = 8                     # requests per model call (1: batching off)
    token: str = ""                        # require this bearer token (or set PRISMATIC_SERVE_TOKEN)
    max_request_mb: float = 16.0           # larger requests are refused (413 / error frame)
    log_level: str = "info"                # debug | info | warning | error
    # fmt: on

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def quantize(self) -> str | None:
        return "8bit" if self.load_in_8bit else "4bit" if self.load_in_4bit else None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def problems(self) -> list[str]:
        """Every invalid setting, each with the flag and the valid choices."""
        out = []
        if not self.checkpoint:
            out.append(
                "--checkpoint is required: a HF-layout directory, a native run directory or a checkpoints/*.pt file"
            )
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            out.append(f"--port must be in 0..65535, got {self.port!r}")
        for flag, value, choices in (("--dtype", self.dtype, DTYPES), ("--decode", self.decode, DECODE_MODES),
                                     ("--gripper", self.gripper, GRIPPER_CONVENTIONS),
                                     ("--ws_root", self.ws_root, (*WS_PROTOCOLS, "none")),
                                     ("--log_level", self.log_level, ("debug", "info", "warning", "error"))):  # fmt: skip
            if value not in choices:
                out.append(f"{flag} {value!r} is not one of: {', '.join(choices)}")
        if self.load_in_8bit and self.load_in_4bit:
            out.append("--load_in_8bit and --load_in_4bit are exclusive: pick one")
        unknown = [p for p in self.protocols if p not in ALL_PROTOCOLS]
        if unknown or not self.protocols:
            out.append(f"--protocols {self.protocols} must name some of: {', '.join(ALL_PROTOCOLS)}")
        if self.ws_root in WS_PROTOCOLS and self.ws_root not in self.protocols:
            out.append(
                f"--ws_root {self.ws_root} is not among --protocols {self.protocols}; enable it or use --ws_root none"
            )
        if not (isinstance(self.max_batch, int) and 1 <= self.max_batch <= 256):
            out.append(
                f"--max_batch must be an integer in 1..256 (1 turns batching off), got {self.max_batch!r}"
            )
        if not 0 <= self.batch_window_ms <= 10_000:
            out.append(f"--batch_window_ms must be in [0, 10000], got {self.batch_window_ms!r}")
        if not 0.01 <= self.max_request_mb <= 1024:
            out.append(f"--max_request_mb must be in [0.01, 1024], got {self.max_request_mb!r}")
        try:
            parse_overrides(self.obs_keys, tuple(DEFAULT_KEYS))
        except ValueError as e:
            out.append(str(e))
        return out

    def validate(self) -> ServeConfig:
        problems = self.problems()
        if problems:
            raise ValueError("invalid server settings:\n  - " + "\n  - ".join(problems))
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
