"""prismatic: train, fine-tune, evaluate and serve OpenVLA-style vision-language-action models.

Importing the package registers the `openvla` and `prismatic` model types with the transformers
Auto classes, so official checkpoint directories load without `trust_remote_code`.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# TensorFlow and triton (pulled in by CUDA builds of torch) bundle clashing native libraries: loading
# triton after TensorFlow segfaults. Fail with an explanation instead.
if "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton"):
    raise ImportError(
        "import prismatic (or torch) before tensorflow: with tensorflow already loaded, importing triton "
        "(a dependency of CUDA builds of torch) crashes the process"
    )

from prismatic.hf import register_auto_classes

register_auto_classes()

if TYPE_CHECKING:
    from prismatic.models.load import load_vla  # noqa: F401


def __getattr__(name: str) -> Any:  # keep `import prismatic` light: load helpers on first use
    if name == "load_vla":
        from prismatic.models.load import load_vla

        return load_vla
    raise AttributeError(f"module 'prismatic' has no attribute {name!r}")
