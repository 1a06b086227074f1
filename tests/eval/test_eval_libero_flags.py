"""vla-scripts/eval_libero.py's model flags: --load_in_8bit / --load_in_4bit (bitsandbytes, as the original's)
and --decode, checked before anything is loaded, and passed to load_vla."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from prismatic.eval import VLAPolicy
from prismatic.models.quantization import import_bitsandbytes, quantization_of

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "eval_libero_script", REPO / "vla-scripts" / "eval_libero.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_libero_script"] = module
    spec.loader.exec_module(module)
    return module


def test_conflicting_or_unknown_flags_fail_before_loading(script):
    cfg = script.EvalLiberoConfig(checkpoint="/absent", load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(ValueError, match="--load_in_8bit and --load_in_4bit are exclusive"):
        script._check(cfg)
    cfg = script.EvalLiberoConfig(checkpoint="/absent", decode="fast")
    with pytest.raises(
        ValueError, match="unknown --decode 'fast'; choose one of: auto, eager, static, graphs"
    ):
        script._check(cfg)


@pytest.mark.skipif(
    import_bitsandbytes() is None, reason="bitsandbytes is not installed (the `train` extra on Linux)"
)
def test_load_in_8bit_and_decode_reach_the_policy(script, tiny_checkpoint):
    cfg = script.EvalLiberoConfig(checkpoint=str(tiny_checkpoint), load_in_8bit=True, decode="static", device="cpu",
                                  dtype="float32", unnorm_key="bridge_orig")  # fmt: skip
    script._check(cfg)
    policy = script._make_policy(cfg, preprocess=None)
    assert isinstance(policy, VLAPolicy)
    assert quantization_of(policy.vla.model) == "8bit" and policy.vla.decode == "static"
