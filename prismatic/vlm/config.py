"""Typed configuration of VLM training (draccus): the model (`--model.type`, the original's registered VLMs),
its per-stage optimisation recipes, the conversation data, the stage, and the shared run sections.

    python vla-scripts/pretrain_vlm.py --model.type prism-dinosiglip-224px+7b --stage finetune \
        --data.root data --llm_weights /ckpts/Llama-2-7b-hf --vision_weights /ckpts/timm

A model is a `VLMModelConfig` subclass registered with `@VLMModelConfig.register_subclass("id")` (the ids and
fields are the original's, prismatic-vlms / openvla `prismatic/conf/models.py`, and MiniVLA's Qwen2.5 one). Its
recipes are one `StageRecipe` per stage kind (`--model.align.*`, `--model.finetune.*`), not copied fields.
`VLMTrainConfig.validate` reports every problem at once, each naming its flag, before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import draccus

from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.llm.loading import llm_problems, tokenizer_problems
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.models.vision.transforms import RESIZE_STRATEGIES
from prismatic.training.config import (
    CheckpointConfig,
    ConfigError,
    LoggingConfig,
    LoRAConfig,
    LRSchedule,
    ParallelConfig,
    Sharding,
)
from prismatic.vlm.stages import VLM_STAGES, VLMStage


@dataclass
class StageRecipe:
    """How one stage optimises (the fields the training loop reads, as `cfg.optim`)."""

    # fmt: off
    epochs: int = 1                       # passes over the data (if max_steps is None)
    max_steps: int | None = None          # optimizer steps; overrides epochs
    global_batch_size: int = 128          # samples per optimizer step, all ranks together
    per_device_batch_size: int = 16       # samples per forward pass on one rank (accumulation is derived)
    learning_rate: float = 2e-5           # peak learning rate (AdamW)
    weight_decay: float = 0.1             # AdamW weight decay (not on norms and biases)
    max_grad_norm: float = 1.0            # global gradient clipping
    lr_schedule: str = "warmup-cosine"    # constant | warmup-cosine (the original's linear-warmup+cosine-decay) | step
    warmup_ratio: float = 0.03            # fraction of steps to warm up
    lr_decay_step: int | None = None      # step schedule only: the lr drops 10x from this step on
    # fmt: on


def _align_recipe() -> StageRecipe:  # the original's align stage (LLaVA-1.5's pretraining)
    return StageRecipe(global_batch_size=256, per_device_batch_size=16, learning_rate=1e-3, weight_decay=0.0)


def _finetune_recipe() -> StageRecipe:  # the original's finetune stage (LLaVA-1.5's instruction tuning)
    return StageRecipe(global_batch_size=128, per_device_batch_size=16, learning_rate=2e-5, weight_decay=0.1)


@dataclass
class VLMModelConfig(draccus.ChoiceRegistry):
    # fmt: off
    vision_backbone_id: str = "clip-vit-l-336px"          # key of prismatic.models.vision.backbones.VISION_BACKBONES
    llm_backbone_id: str = "vicuna-v15-7b"                # key of prismatic.models.llm.backbones.LLM_BACKBONES
    arch_specifier: str = "gelu-mlp"                      # projector; "no-align+<projector>" skips the align stage
    image_resize_strategy: str = "letterbox"              # resize-naive | resize-crop | letterbox
    llm_max_length: int = 2048                            # text tokens per sample (image patches come on top)
    image_size: int | None = None                         # override the backbone's resolution (None: native)
    size: str = "full"                                    # full (pretrained ViT + LLM) | small | tiny (random, CPU)
    align: StageRecipe = field(default_factory=_align_recipe)        # --stage align
    finetune: StageRecipe = field(default_factory=_finetune_recipe)  # --stage finetune | full-finetune | lora-finetune
    # fmt: on

    @property
    def model_id(self) -> str:
        try:
            return self.get_choice_name(type(self))
        except ValueError:  # the base class itself (fields set by hand)
            return "custom"

    @property
    def skips_align(self) -> bool:
        """`no-align+...` architectures train the projector from scratch in the finetune stage (Prism models)."""
        return self.arch_specifier.startswith("no-align")


# -- the original's VLMs (fields as in prismatic/conf/models.py; every recipe is LLaVA-1.5's) ---------------
@VLMModelConfig.register_subclass("reproduction-llava-v15+7b")
@dataclass
class LLaVaV15Reproduction7B(VLMModelConfig):
    """LLaVA-1.5 7B: CLIP ViT-L/14 336px, Vicuna v1.5 7B, letterbox, align then finetune."""


@VLMModelConfig.register_subclass("reproduction-llava-v15+13b")
@dataclass
class LLaVaV15Reproduction13B(VLMModelConfig):
    llm_backbone_id: str = "vicuna-v15-13b"


@VLMModelConfig.register_subclass("one-stage+7b")
@dataclass
class OneStage7B(VLMModelConfig):
    """The LLaVA-1.5 reproduction without the align stage (the paper's single-stage finding)."""

    arch_specifier: str = "no-align+gelu-mlp"


@VLMModelConfig.register_subclass("clip-224px+7b")
@dataclass
class CLIP224px7B(OneStage7B):
    vision_backbone_id: str = "clip-vit-l"


@VLMModelConfig.register_subclass("siglip-224px+7b")
@dataclass
class SigLIP224px7B(OneStage7B):
    """The base of the original's SigLIP VLAs (`siglip-224px+mx-*`)."""

    vision_backbone_id: str = "siglip-vit-so400m"


@VLMModelConfig.register_subclass("dinosiglip-224px-resize-naive+7b")
@dataclass
class DinoSigLIP224pxResizeNaive7B(OneStage7B):
    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    image_resize_strategy: str = "resize-naive"
    arch_specifier: str = "no-align+fused-gelu-mlp"


@VLMModelConfig.register_subclass("llama2+7b")
@dataclass
class Llama2_7B(OneStage7B):
    llm_backbone_id: str = "llama2-7b-pure"


@VLMModelConfig.register_subclass("llama2-chat+7b")
@dataclass
class Llama2Chat7B(OneStage7B):
    llm_backbone_id: str = "llama2-7b-chat"


@VLMModelConfig.register_subclass("mistral-v0.1+7b")
@dataclass
class MistralV1_7B(OneStage7B):
    llm_backbone_id: str = "mistral-v0.1-7b-pure"


@VLMModelConfig.register_subclass("mistral-instruct-v0.1+7b")
@dataclass
class MistralInstructV1_7B(OneStage7B):
    llm_backbone_id: str = "mistral-v0.1-7b-instruct"


@VLMModelConfig.register_subclass("phi-2+3b")
@dataclass
class Phi2_3B(OneStage7B):
    llm_backbone_id: str = "phi-2-3b"


@VLMModelConfig.register_subclass("prism-clip+7b")
@dataclass
class PrismCLIP7B(OneStage7B):
    vision_backbone_id: str = "clip-vit-l-336px"
    image_resize_strategy: str = "resize-naive"
    llm_backbone_id: str = "llama2-7b-pure"
    finetune: StageRecipe = field(default_factory=lambda: _epochs(_finetune_recipe(), 2))


@VLMModelConfig.register_subclass("prism-siglip+7b")
@dataclass
class PrismSigLIP7B(PrismCLIP7B):
    vision_backbone_id: str = "siglip-vit-so400m-384px"


@VLMModelConfig.register_subclass("prism-dinosiglip+7b")
@dataclass
class PrismDinoSigLIP7B(PrismCLIP7B):
    """The original pretrain.py's default model: DINOv2 + SigLIP 384px, Llama-2 7B, 2 epochs (LLaVA + LVIS-4V + LRV)."""

    vision_backbone_id: str = "dinosiglip-vit-so-384px"
    arch_specifier: str = "no-align+fused-gelu-mlp"


@VLMModelConfig.register_subclass("prism-dinosiglip+13b")
@dataclass
class PrismDinoSigLIP13B(PrismDinoSigLIP7B):
    llm_backbone_id: str = "llama2-13b-pure"


@VLMModelConfig.register_subclass("prism-dinosiglip-224px-controlled+7b")
@dataclass
class PrismDinoSigLIP224pxControlled7B(OneStage7B):
    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    image_resize_strategy: str = "resize-naive"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"


@VLMModelConfig.register_subclass("prism-dinosiglip-224px+7b")
@dataclass
class PrismDinoSigLIP224px7B(PrismDinoSigLIP224pxControlled7B):
    """OpenVLA's base VLM (`--vla.base_vlm prism-dinosiglip-224px+7b`): 2 epochs of LLaVA + LVIS-4V + LRV."""

    finetune: StageRecipe = field(default_factory=lambda: _epochs(_finetune_recipe(), 2))


@VLMModelConfig.register_subclass("prism-qwen25-dinosiglip-224px+0_5b")
@dataclass
class PrismQwen25DinoSigLIP224px0_5B(PrismDinoSigLIP224px7B):
    """MiniVLA's base VLM (openvla-mini): the same recipe on Qwen2.5 0.5B, 32k-token context."""

    llm_backbone_id: str = "qwen2.5-0.5b-pure"
    llm_max_length: int = 32768


# -- CPU-sized models with the same structure (random init; tests, the toy job) -----------------------------
def _tiny_recipe(batch: int = 8, lr: float = 1e-3) -> StageRecipe:
    return StageRecipe(global_batch_size=batch, per_device_batch_size=batch, learning_rate=lr, weight_decay=0.0,
                       lr_schedule="constant", warmup_ratio=0.0)  # fmt: skip


@VLMModelConfig.register_subclass("tiny")
@dataclass
class TinyVLM(VLMModelConfig):
    """Test-sized (`size: tiny`, as VLA configs use it): SigLIP-structured ViT, Llama-2-structured decoder."""

    vision_backbone_id: str = "siglip-vit-so400m"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "gelu-mlp"
    image_resize_strategy: str = "resize-naive"
    llm_max_length: int = 512
    size: str = "tiny"
    align: StageRecipe = field(default_factory=_tiny_recipe)
    finetune: StageRecipe = field(default_factory=_tiny_recipe)


@VLMModelConfig.register_subclass("small")
@dataclass
class SmallVLM(TinyVLM):
    size: str = "small"


def _epochs(recipe: StageRecipe, epochs: int) -> StageRecipe:
    recipe.epochs = epochs
    return recipe


# -- data ---------------------------------------------------------------------------------------------------
# The original's dataset layouts (`prismatic/conf/datasets.py`; files as scripts/preprocess.py put them under
# the root): (align JSON, align image dir), (finetune JSON, finetune image dir). Documented in docs/vlm.md.
_LLAVA_ALIGN = ("download/llava-laion-cc-sbu-558k/chat.json", "download/llava-laion-cc-sbu-558k")
VLM_DATASETS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "llava-v15": (_LLAVA_ALIGN, ("download/llava-v1.5-instruct/llava_v1_5_mix665k.json", "download/llava-v1.5-instruct")),
    "llava-multimodal": (_LLAVA_ALIGN, ("download/llava-v1.5-instruct/llava_v1_5_stripped625k.json",
                                        "download/llava-v1.5-instruct")),
    "llava-lvis4v": (_LLAVA_ALIGN, ("download/llava-v1.5-instruct/llava_v1_5_lvis4v_mix888k.json",
                                    "download/llava-v1.5-instruct")),
    "llava-lrv": (_LLAVA_ALIGN, ("download/llava-v1.5-instruct/llava_v1_5_lrv_mix1008k.json", "download/llava-v1.5-instruct")),
    "llava-lvis4v-lrv": (_LLAVA_ALIGN, ("download/llava-v1.5-instruct/llava_v1_5_lvis4v_lrv_mix1231k.json",
                                        "download/llava-v1.5-instruct")),
}  # fmt: skip


@dataclass
class VLMDataConfig:
    # fmt: off
    json: Path | None = None              # conversation JSON (LLaVA-v1.5 format); None: --data.dataset's file for the stage
    image_dir: Path | None = None         # the JSON's "image" paths are relative to it (None: --data.dataset's)
    dataset: str = "llava-v15"            # a layout of the original's under --data.root (used when json/image_dir are None)
    root: Path = Path("data")             # where the original's preprocess.py put the data
    # fmt: on

    def paths(self, recipe: str) -> tuple[Path | None, Path | None]:
        """(JSON, image dir) for a stage kind ("align" | "finetune"): the explicit ones, else the layout's."""
        if self.dataset not in VLM_DATASETS:
            return self.json, self.image_dir
        json_rel, images_rel = VLM_DATASETS[self.dataset][0 if recipe == "align" else 1]
        return (self.json if self.json is not None else self.root / json_rel,
                self.image_dir if self.image_dir is not None else self.root / images_rel)  # fmt: skip


@dataclass
class VLMTrainConfig:
    # fmt: off
    model: VLMModelConfig = field(default_factory=lambda: VLMModelConfig.get_choice_class("tiny")())
    stage: str = "finetune"                    # align | finetune | full-finetune | lora-finetune
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    pretrained_checkpoint: Path | None = None  # a VLM run dir (or its checkpoints/*.pt) to start from (finetune stages)
    tokenizer: Path | None = None              # tokenizer dir (default: the pretrained run's, else the LLM's own)
    llm_weights: str | None = None             # full size: the LLM's HF directory or Hub id (default: its Hub id, cached)
    vision_weights: Path | None = None         # full size: timm weights of the ViT(s), a file or a directory
    run_root: Path = Path("runs")              # runs are written to <run_root>/<run_id>/
    run_id: str | None = None                  # default: <model id>+stage-<stage>+x<seed> (the original's)
    seed: int = 7
    device: str | None = None                  # None: cuda if available, else cpu
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(rank=128, alpha=256, dropout=0.05))  # LLaVA-1.5's LoRA
    # fmt: on

    @property
    def stage_spec(self) -> VLMStage:
        return VLM_STAGES.get(self.stage)

    @property
    def optim(self) -> StageRecipe:
        """The stage's recipe: what the training loop reads (batch sizes, steps, learning rate, schedule)."""
        return self.model.align if self.stage_spec.recipe == "align" else self.model.finetune

    @property
    def recipe_flag(self) -> str:
        return f"model.{self.stage_spec.recipe}"

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.model.model_id}+stage-{self.stage}+x{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.run_root / self.resolved_run_id

    @property
    def data_paths(self) -> tuple[Path | None, Path | None]:
        return self.data.paths(self.stage_spec.recipe)

    def grad_accumulation_steps(self, world_size: int) -> int:
        return self.optim.global_batch_size // (self.optim.per_device_batch_size * world_size)

    def resolved_pretrained_checkpoint(self) -> Path | None:
        """--pretrained_checkpoint, else (finetune stages of an align architecture) the align run the original's
        naming convention points to, `<run_root>/<model id>+stage-align+x<seed>`, if it exists."""
        if self.pretrained_checkpoint is not None:
            return Path(self.pretrained_checkpoint).expanduser()
        if self.stage == "align" or self.model.skips_align:
            return None
        default = self.run_root / f"{self.model.model_id}+stage-align+x{self.seed}"
        return default if default.is_dir() else None

    def validate(self, world_size: int = 1) -> None:
        """Raise one ConfigError listing every problem, each with the flag that fixes it."""
        m, problems = self.model, []

        def check_choice(value: str, valid, flag: str) -> None:
            valid = list(valid)
            if value not in valid:
                problems.append(f"--{flag}={value!r} is not one of: {', '.join(valid)}")

        check_choice(self.stage, VLM_STAGES.names(), "stage")
        check_choice(m.vision_backbone_id, VISION_BACKBONES.names(), "model.vision_backbone_id")
        check_choice(m.llm_backbone_id, LLM_BACKBONES.names(), "model.llm_backbone_id")
        check_choice(m.arch_specifier.split("+")[-1], PROJECTORS.names(), "model.arch_specifier (projector part)")
        check_choice(m.image_resize_strategy, RESIZE_STRATEGIES, "model.image_resize_strategy")
        check_choice(m.size, ("full", "small", "tiny"), "model.size")
        check_choice(self.parallel.sharding, [s.value for s in Sharding], "parallel.sharding")
        check_choice(self.logging.wandb_mode, ("online", "offline", "disabled"), "logging.wandb_mode")
        for t in self.logging.trackers:
            check_choice(t, ("jsonl", "wandb"), "logging.trackers")
        if m.llm_max_length < 8:
            problems.append(f"--model.llm_max_length must be >= 8 (text tokens per sample), got {m.llm_max_length}")
        if m.image_size is not None and m.image_size < 1:
            problems.append(f"--model.image_size must be >= 1 (or unset for the backbone's resolution), got {m.image_size}")
        if self.stage not in VLM_STAGES:
            raise ConfigError("invalid VLM training configuration:\n  - " + "\n  - ".join(problems))
        problems += recipe_problems(self.optim, world_size, self.recipe_flag)
        problems += self._source_problems()
        problems += self._data_problems()
        if self.checkpoint.save_hf:
            problems.append("--checkpoint.save_hf is for VLA runs; a VLM run is saved in the native layout "
                            "(checkpoints/*.pt), which load_vlm and --vla.base_vlm read")  # fmt: skip
        if self.checkpoint.save_interval < 1:
            problems.append(f"--checkpoint.save_interval must be >= 1, got {self.checkpoint.save_interval}")
        if self.checkpoint.keep_last < 1:
            problems.append(f"--checkpoint.keep_last must be >= 1, got {self.checkpoint.keep_last}")
        if self.logging.log_interval < 1:
            problems.append(f"--logging.log_interval must be >= 1, got {self.logging.log_interval}")
        if self.lora.enabled:
            problems.append("--lora.enabled is for VLA fine-tuning; for a VLM pass --stage lora-finetune (--lora.rank, "
                            "--lora.alpha, --lora.dropout, --lora.target_modules apply)")  # fmt: skip
        if self.lora.quantization is not None:
            problems.append("--lora.quantization (QLoRA) is not supported for VLM stages; drop it")
        if self.stage_spec.lora_on and (self.lora.rank < 1 or self.lora.alpha <= 0 or not 0 <= self.lora.dropout < 1):
            problems.append(f"--lora.rank must be >= 1, --lora.alpha > 0 and --lora.dropout in [0, 1); got "
                            f"{self.lora.rank}, {self.lora.alpha}, {self.lora.dropout}")  # fmt: skip
        if not 0 <= self.seed < 2**31:
            problems.append(f"--seed must be in [0, 2^31), got {self.seed}")
        if problems:
            raise ConfigError("invalid VLM training configuration:\n  - " + "\n  - ".join(problems))

    def _source_problems(self) -> list[str]:
        """Where the weights come from: the pretrained run, the tokenizer, and (full size) the ViT and LLM."""
        m, problems = self.model, []
        pretrained = self.resolved_pretrained_checkpoint()
        if self.stage == "align" and self.pretrained_checkpoint is not None:
            problems.append("--pretrained_checkpoint: the align stage trains a fresh projector on the pretrained ViT and "
                            "LLM; drop it (it is for the finetune stages)")  # fmt: skip
        if pretrained is not None and not pretrained.exists():
            problems.append(f"--pretrained_checkpoint={str(pretrained)!r} does not exist")
        elif pretrained is not None:
            from prismatic.vlm.checkpoints import checkpoint_problems

            problems += [f"--pretrained_checkpoint: {p}" for p in checkpoint_problems(pretrained)]
        if pretrained is None and self.stage != "align" and not m.skips_align:
            default = self.run_root / f"{m.model_id}+stage-align+x{self.seed}"
            problems.append(
                f"--stage {self.stage} of --model.arch_specifier={m.arch_specifier!r} starts from an aligned projector: "
                f"pass --pretrained_checkpoint ALIGN_RUN_DIR (the original's default, {default}, does not exist), run "
                f"--stage align first, or use a 'no-align+{m.arch_specifier.split('+')[-1]}' architecture"
            )
        if self.tokenizer is not None:
            problems += [f"--tokenizer: {p}" for p in tokenizer_problems(self.tokenizer)]
        if m.size == "full" and pretrained is None and not problems:
            from prismatic.models.vision.pretrained import vision_weights_problems

            if m.vision_backbone_id in VISION_BACKBONES:
                problems += [p.replace("--vla.vision_weights", "--vision_weights")
                             for p in vision_weights_problems(m.vision_backbone_id, self.vision_weights)]  # fmt: skip
            if m.llm_backbone_id in LLM_BACKBONES:
                source = self.llm_weights or LLM_BACKBONES.get(m.llm_backbone_id).hf_hub_id
                problems += [f"--llm_weights: {p}" for p in llm_problems(source)]
        return problems

    def _data_problems(self) -> list[str]:
        json_path, image_dir = self.data_paths
        problems = []
        if self.data.dataset not in VLM_DATASETS and (self.data.json is None or self.data.image_dir is None):
            problems.append(f"--data.dataset={self.data.dataset!r} is not one of: {', '.join(VLM_DATASETS)}; or pass "
                            "--data.json and --data.image_dir")  # fmt: skip
            return problems
        if json_path is None or not Path(json_path).is_file():
            problems.append(f"--data.json={str(json_path)!r} is not a file (a LLaVA-style conversation JSON; see docs/vlm.md)")
        if image_dir is None or not Path(image_dir).is_dir():
            problems.append(f"--data.image_dir={str(image_dir)!r} is not a directory (the JSON's image paths are "
                            "relative to it)")  # fmt: skip
        return problems


def recipe_problems(r: StageRecipe, world_size: int, prefix: str) -> list[str]:
    """Every out-of-range optimisation setting of a stage recipe, each naming its flag (`--<prefix>.<field>`)."""
    problems = []

    def need(ok: bool, name: str, value, rule: str) -> None:
        if not ok:
            problems.append(f"--{prefix}.{name} must be {rule}, got {value}")

    per_step = r.per_device_batch_size * world_size
    need(r.per_device_batch_size >= 1, "per_device_batch_size", r.per_device_batch_size, ">= 1")
    if r.per_device_batch_size >= 1 and (r.global_batch_size % per_step or r.global_batch_size < per_step):
        ok = per_step * max(1, round(r.global_batch_size / per_step))
        problems.append(f"--{prefix}.global_batch_size={r.global_batch_size} is not a multiple of per_device_batch_size "
                        f"({r.per_device_batch_size}) x world size ({world_size}) = {per_step}; set "
                        f"--{prefix}.global_batch_size {ok} or change --{prefix}.per_device_batch_size")  # fmt: skip
    if r.max_steps is not None:
        need(r.max_steps >= 1, "max_steps", r.max_steps, ">= 1 (or unset to use epochs)")
    else:
        need(r.epochs >= 1, "epochs", r.epochs, ">= 1 (or set max_steps)")
    need(r.learning_rate > 0 and math.isfinite(r.learning_rate), "learning_rate", r.learning_rate, "a positive number")
    need(math.isfinite(r.weight_decay) and r.weight_decay >= 0, "weight_decay", r.weight_decay, ">= 0")
    need(r.max_grad_norm > 0, "max_grad_norm", r.max_grad_norm, "> 0 (inf disables clipping)")
    need(0.0 <= r.warmup_ratio < 1.0, "warmup_ratio", r.warmup_ratio, "in [0, 1)")
    schedules = [s.value for s in LRSchedule]
    need(r.lr_schedule in schedules, "lr_schedule", repr(r.lr_schedule), f"one of: {', '.join(schedules)}")
    if r.lr_schedule == LRSchedule.STEP.value:
        need(r.lr_decay_step is not None and r.lr_decay_step >= 1, "lr_decay_step", r.lr_decay_step,
             ">= 1 with the step schedule")  # fmt: skip
    return problems
