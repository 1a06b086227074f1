"""Hugging Face image processor and processor for Prismatic / OpenVLA checkpoints.

`PrismaticImageProcessor` reads and writes the official `preprocessor_config.json` fields and runs
`prismatic.models.vision.transforms.ImageTransform` (the same code the training pipeline uses).
`PrismaticProcessor` pairs it with the tokenizer: `processor(prompt, image)` gives `input_ids`,
`attention_mask` and `pixel_values`; lists of prompts and images give a left-padded batch, ready
for `predict_action` or `generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from prismatic.models.vision.transforms import (
    RESIZE_STRATEGIES,
    FeaturizerPreprocess,
    ImageTransform,
    interpolation_code,
)

_INTERP_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _is_image_like(x: Any) -> bool:
    import numpy as np

    if isinstance(x, (Image.Image, np.ndarray, torch.Tensor)):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_image_like(i) for i in x)


class PrismaticImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        use_fused_vision_backbone: bool = False,
        image_resize_strategy: str = "letterbox",
        input_sizes: list[list[int]] | None = None,
        interpolations: list[str] | None = None,
        means: list[list[float]] | None = None,
        stds: list[list[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        if image_resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(
                f"image_resize_strategy={image_resize_strategy!r} is not one of {', '.join(RESIZE_STRATEGIES)}"
            )
        n = 2 if use_fused_vision_backbone else 1
        self.use_fused_vision_backbone = use_fused_vision_backbone
        self.image_resize_strategy = image_resize_strategy
        self.input_sizes = input_sizes or [[3, 224, 224]] * n
        self.interpolations = interpolations or ["bicubic"] * n
        self.means = means or [[0.5, 0.5, 0.5]] * n
        self.stds = stds or [[0.5, 0.5, 0.5]] * n
        # Exact torchvision-style parameters (the official file has them; they win when present).
        self.tvf_resize_params = kwargs.pop("tvf_resize_params", None)
        self.tvf_crop_params = kwargs.pop("tvf_crop_params", None)
        self.tvf_normalize_params = kwargs.pop("tvf_normalize_params", None)
        self.tvf_do_letterbox = kwargs.pop("tvf_do_letterbox", image_resize_strategy == "letterbox")
        self.tvf_letterbox_fill = kwargs.pop("tvf_letterbox_fill", None)
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        self.transform = ImageTransform(self._featurizer_preprocess())

    def _featurizer_preprocess(self) -> list[FeaturizerPreprocess]:
        if self.tvf_resize_params and self.tvf_crop_params and self.tvf_normalize_params:
            out = []
            for resize, crop, norm in zip(self.tvf_resize_params, self.tvf_crop_params, self.tvf_normalize_params):
                size = resize["size"]
                size = tuple(size) if isinstance(size, (list, tuple)) and len(size) == 2 else int(
                    size[0] if isinstance(size, (list, tuple)) else size
                )
                fill = tuple(self.tvf_letterbox_fill) if self.tvf_do_letterbox and self.tvf_letterbox_fill else None
                out.append(
                    FeaturizerPreprocess(
                        resize=size,
                        crop=tuple(crop["output_size"]),
                        mean=tuple(norm["mean"]),
                        std=tuple(norm["std"]),
                        interpolation=interpolation_code(resize.get("interpolation", 3)),
                        letterbox_fill=fill,
                    )
                )
            return out
        return [
            FeaturizerPreprocess.for_strategy(self.image_resize_strategy, size[-1], tuple(mean), tuple(std), interp)
            for size, interp, mean, std in zip(self.input_sizes, self.interpolations, self.means, self.stds)
        ]

    @classmethod
    def from_preprocess(
        cls, featurizers: Sequence[FeaturizerPreprocess], image_resize_strategy: str
    ) -> PrismaticImageProcessor:
        """Build the processor (and its official-format fields) from the training transform's parameters."""
        fill = featurizers[0].letterbox_fill
        return cls(
            use_fused_vision_backbone=len(featurizers) > 1,
            image_resize_strategy=image_resize_strategy,
            input_sizes=[[3, *p.crop] for p in featurizers],
            interpolations=[_INTERP_NAMES.get(p.interpolation, "bicubic") for p in featurizers],
            means=[list(p.mean) for p in featurizers],
            stds=[list(p.std) for p in featurizers],
            tvf_resize_params=[
                {"antialias": True, "interpolation": p.interpolation, "max_size": None,
                 "size": list(p.resize) if isinstance(p.resize, tuple) else [p.resize]}
                for p in featurizers
            ],  # fmt: skip
            tvf_crop_params=[{"output_size": list(p.crop)} for p in featurizers],
            tvf_normalize_params=[
                {"inplace": False, "mean": list(p.mean), "std": list(p.std)} for p in featurizers
            ],
            tvf_do_letterbox=fill is not None,
            tvf_letterbox_fill=list(fill) if fill is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("transform", None)
        out.pop("auto_map", None)  # no remote code ships with our files
        out["image_processor_type"] = type(self).__name__
        out["processor_class"] = "PrismaticProcessor"
        return out

    def __call__(self, images, return_tensors: str | None = "pt", **_: Any) -> BatchFeature:
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixel_values = torch.stack([self.transform(img) for img in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)

    preprocess = __call__


class PrismaticProcessor(ProcessorMixin):
    """Image processor + tokenizer. Accepts `processor(text, images)` and `processor(images=..., text=...)`."""

    def __init__(self, image_processor: PrismaticImageProcessor | None = None, tokenizer=None) -> None:
        super().__init__(image_processor, tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> PrismaticProcessor:
        path = Path(pretrained_model_name_or_path)
        kwargs.pop("trust_remote_code", None)
        image_processor = PrismaticImageProcessor.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> list[str]:
        """The official layout: preprocessor_config.json + the tokenizer's own files."""
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        files = self.image_processor.save_pretrained(save_directory)
        files += list(self.tokenizer.save_pretrained(save_directory))
        return [str(f) for f in files]

    def __call__(
        self,
        text: str | list[str] | None = None,
        images=None,
        padding: bool | str = True,
        truncation: bool | None = None,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        # The original signature is (text, images); HF's convention is (images, text). Take both.
        if _is_image_like(text) and (images is None or isinstance(images, (str, list))):
            text, images = images, text
        if text is None or images is None:
            raise ValueError("PrismaticProcessor needs both a prompt (text) and an image")
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        imgs = list(images) if isinstance(images, (list, tuple)) else [images]
        if len(texts) != len(imgs):
            raise ValueError(f"got {len(texts)} prompts but {len(imgs)} images; pass one image per prompt")
        encoded = self.tokenizer(
            texts,
            padding=padding if len(texts) > 1 else False,
            padding_side="left",  # generation appends on the right
            truncation=truncation,
            max_length=max_length,
            return_tensors=return_tensors,
            **kwargs,
        )
        pixel_values = self.image_processor(imgs, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature({**encoded, "pixel_values": pixel_values})

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]
