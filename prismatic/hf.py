"""Registration with the transformers Auto classes (run once by `import prismatic`).

After this, `AutoConfig`, `AutoImageProcessor`, `AutoProcessor` and `AutoModelForImageTextToText`
load `model_type: openvla` / `prismatic` directories with our classes, no `trust_remote_code`:
an `auto_map` in `config.json` pointing at remote code is ignored because local code is found first.
"""

from __future__ import annotations

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

from prismatic.models.configuration import OpenVLAConfig, PrismaticConfig
from prismatic.models.modeling import OpenVLAForActionPrediction, PrismaticForConditionalGeneration
from prismatic.models.processing import PrismaticImageProcessor, PrismaticProcessor

_done = False


def register_auto_classes() -> None:
    global _done
    if _done:
        return
    pairs = ((PrismaticConfig, PrismaticForConditionalGeneration), (OpenVLAConfig, OpenVLAForActionPrediction))
    for config_cls, model_cls in pairs:
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForImageTextToText.register(config_cls, model_cls, exist_ok=True)
        legacy = getattr(transformers, "AutoModelForVision2Seq", None)  # removed in transformers 5
        if legacy is not None:
            legacy.register(config_cls, model_cls, exist_ok=True)
        AutoImageProcessor.register(config_cls, image_processor_classes={"pil": PrismaticImageProcessor}, exist_ok=True)
        AutoProcessor.register(config_cls, PrismaticProcessor, exist_ok=True)
    _done = True
