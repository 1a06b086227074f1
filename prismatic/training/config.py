"""Typed training configuration (draccus): one `TrainConfig`, nested sections, named experiments.

An experiment (`--vla.type NAME`) is a `VLAConfig` subclass registered with a decorator; it fixes the
model, data mixture and optimisation recipe, and any field can still be overridden from YAML
(`--config_path configs/vla/x.yaml`) or the command line (`--vla.learning_rate 1e-5`). Derived
values (gradient accumulation, run id) are computed, never copied. `TrainConfig.validate` reports
every problem at once, each naming the flag that fixes it, before any model or data is built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import draccus

from prismatic.data.locate import LAYOUT, absent_datasets, present_datasets
from prismatic.data.spec import SpecError, all_dataset_specs, resolve_mixture
from prismatic.models.base_vlm import base_vlm_problems, resolve_base_vlm
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.load import CheckpointError, is_hf_dir
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.models.vision.transforms import RESIZE_STRATEGIES
from prismatic.util.errors import UserError

# The shortest sequence that holds a VLA sample: BOS + "In: What action should the robot take to <one word>?\nOut:"
# (15 Llama-2 tokens with BOS) + the empty token + 7 action tokens + EOS. Anything shorter cuts every label.
MIN_LLM_MAX_LENGTH = 24


class Stage(str, Enum):
    """Which parameters train (the original's vla-full-train / vla-train / vla-sandwich-train / vla-last-layer-train)."""

    FULL = "full"  # vision backbone, projector and LLM
    FROZEN_VISION = "frozen-vision"  # projector and LLM
    SANDWICH = "sandwich"  # vision backbone, projector, and the LLM's embeddings, last layer and head
    LAST_LAYER = "last-layer"  # only the LLM's embeddings, last layer and head


class Sharding(str, Enum):
    """Named for what they do (the original called HYBRID_SHARD "full-shard")."""

    FULL_SHARD = "full_shard"  # params, grads and optimizer state sharded over all ranks (ZeRO-3)
    GRAD_OP_SHARD = "grad_op_shard"  # params kept gathered between forward and backward (ZeRO-2)
    HYBRID_SHARD = "hybrid_shard"  # full shard within a node, replicate across nodes
    NO_SHARD = "no_shard"  # replicate everything (DDP semantics)


class LRSchedule(str, Enum):
    CONSTANT = "constant"
    WARMUP_COSINE = "warmup-cosine"  # linear warmup, then cosine decay to 0
    STEP = "step"  # constant, then x0.1 from --vla.lr_decay_step on (OpenVLA-OFT's MultiStepLR)


@dataclass
class VLAConfig(draccus.ChoiceRegistry):
    # fmt: off
    # -- model --
    vision_backbone_id: str = "dinosiglip-vit-so-224px"   # key of prismatic.models.vision.backbones.VISION_BACKBONES
    llm_backbone_id: str = "llama2-7b-pure"               # key of prismatic.models.llm.backbones.LLM_BACKBONES
    arch_specifier: str = "no-align+fused-gelu-mlp"       # projector ("...+<projector>")
    image_resize_strategy: str = "resize-naive"           # resize-naive | resize-crop | letterbox
    llm_max_length: int = 2048                            # truncate sequences to this many tokens
    image_size: int | None = None                         # override the backbone's resolution (None: native)
    size: str = "full"                                    # full | small | tiny (CPU-sized, same structure)
    base_vlm: Path | None = None                          # base VLM dir, checkpoints/*.pt, or id under --model_root (None: random init)
    vision_weights: Path | None = None                    # pretrained ViT weights (file or dir) for a base VLM without them
    stage: str = "full"                                   # full | frozen-vision | sandwich | last-layer
    # -- data --
    # -- action head (prismatic.models.heads); None: the base VLM's setting (OpenVLA's for random init) --
    action_head: str | None = None                        # bins (OpenVLA) | l1-regression | bins-parallel (OpenVLA-OFT)
    chunk_len: int | None = None                          # actions per prediction (OFT: 8 LIBERO, 5 Bridge, 25 ALOHA)
    cameras: tuple[str, ...] | None = None                # camera views in model input order (OFT LIBERO: primary wrist)
    proprio_dim: int | None = None                        # proprio size, one token after the patches (0: none; OFT: 8)
    action_dim: int | None = None                         # action size; parallel heads need it (None: the data's)
    drop_incomplete_chunks: bool = False                  # skip frames whose chunk runs past the end (OFT) instead of padding
    # -- data --
    data_mix: str = "bridge"                              # mixture name or dataset name (prismatic.data)
    shuffle_buffer_size: int = 256_000                    # frames held (encoded) in the shuffle buffer
    image_aug: bool = False                               # the original's random crop + colour jitter
    # -- optimisation --
    epochs: int = 1000                                    # passes over the mixture (if max_steps is None)
    max_steps: int | None = None                          # optimizer steps; overrides epochs
    global_batch_size: int = 256                          # samples per optimizer step, all ranks together
    per_device_batch_size: int = 32                       # samples per forward pass on one rank
    learning_rate: float = 2e-5                           # peak learning rate (AdamW)
    weight_decay: float = 0.0                             # AdamW weight decay (not on norms and biases)
    max_grad_norm: float = 1.0                            # global gradient clipping
    lr_schedule: str = "constant"                         # constant | warmup-cosine | step
    warmup_ratio: float = 0.0                             # fraction of steps to warm up (warmup-cosine)
    lr_decay_step: int | None = None                      # step schedule: the lr drops 10x from this step on
    # fmt: on

    def head_settings(self) -> dict:
        """The action-formulation fields that are set (they override the base VLM's / the defaults)."""
        fields = dict(action_head=self.action_head, chunk_len=self.chunk_len, proprio_dim=self.proprio_dim,
                      action_dim=self.action_dim, cameras=list(self.cameras) if self.cameras is not None else None)  # fmt: skip
        return {k: v for k, v in fields.items() if v is not None}

    @property
    def vla_id(self) -> str:
        try:
            return self.get_choice_name(type(self))
        except ValueError:  # the base class itself (fields set by hand): not a registered experiment
            return "custom"


@dataclass
class ParallelConfig:
    # fmt: off
    sharding: str = "full_shard"               # full_shard | grad_op_shard | hybrid_shard | no_shard
    mixed_precision: bool = True               # bf16 compute (GPU); fp32 master weights
    reduce_in_fp32: bool = True                # gradient reduce-scatter in fp32
    activation_checkpointing: bool = True      # recompute decoder layers / ViT blocks in backward
    backend: str | None = None                 # torch.distributed backend (None: nccl on GPU, gloo on CPU)
    cpu_threads: int | None = None             # torch intra-op threads on CPU (leave cores to tf.data)
    prefetch_batches: int = 2                  # batches prepared ahead by a background thread (0: in the step)
    # fmt: on


@dataclass
class CheckpointConfig:
    # fmt: off
    save_interval: int = 2500                  # optimizer steps between resumable checkpoints
    keep_last: int = 3                         # resumable checkpoints kept on disk
    resume: bool = True                        # continue from the latest complete checkpoint in the run dir
    save_native: bool = True                   # also write consolidated weights to checkpoints/*.pt
    save_hf: bool = False                      # also write an HF-layout export (hf/) at each save
    # fmt: on


@dataclass
class LoggingConfig:
    # fmt: off
    trackers: tuple[str, ...] = ("jsonl",)     # any of: jsonl, wandb
    wandb_project: str = "prismatic"
    wandb_entity: str | None = None
    wandb_mode: str = "online"                 # online | offline | disabled
    log_interval: int = 1                      # steps between metric lines
    progress: bool = True                      # tqdm progress bar with ETA
    # fmt: on


@dataclass
class LoRAConfig:
    # fmt: off
    enabled: bool = False
    rank: int = 32
    alpha: int = 16                            # the original fine-tuning script: min(rank, 16)
    dropout: float = 0.0
    target_modules: str = "all-linear"         # peft target_modules ("all-linear" or a comma-separated list)
    quantization: str | None = None            # None | 4bit | 8bit: QLoRA, frozen bitsandbytes-quantised base (CUDA, CPU)
    # fmt: on


@dataclass
class TrainConfig:
    # fmt: off
    vla: VLAConfig = field(default_factory=lambda: VLAConfig.get_choice_class("tiny+mx-synthetic")())
    data_root: Path = Path("data/rlds")        # <data_root>/<dataset>/<version>/ (TFDS RLDS)
    dataset_configs: tuple[Path, ...] = ()     # extra YAML dataset specs (one's own datasets)
    tokenizer: Path | None = None              # tokenizer dir (default: base_vlm's, else the bundled Llama-2)
    model_root: Path | None = None             # where --vla.base_vlm ids are found (default: $PRISMATIC_MODEL_ROOT)
    run_root: Path = Path("runs")              # runs are written to <run_root>/<run_id>/
    run_id: str | None = None                  # default: <vla.type>+<data_mix>+x<seed>
    seed: int = 7
    device: str | None = None                  # None: cuda if available, else cpu
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # fmt: on

    @property
    def resolved_run_id(self) -> str:
        if self.run_id:
            return self.run_id
        suffix = "+lora" if self.lora.enabled else ""
        return f"{self.vla.vla_id}+{self.vla.data_mix}{suffix}+x{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.run_root / self.resolved_run_id

    @property
    def optim(self) -> VLAConfig:
        """What the training loop reads: batch sizes, steps/epochs, learning rate and schedule (`--vla.*`)."""
        return self.vla

    def grad_accumulation_steps(self, world_size: int) -> int:
        return self.vla.global_batch_size // (self.vla.per_device_batch_size * world_size)

    def validate(self, world_size: int = 1) -> None:
        """Raise one ConfigError listing every problem, each with the flag that fixes it."""
        v, problems = self.vla, []

        def check_choice(value: str, valid, flag: str) -> None:
            valid = list(valid)
            if value not in valid:
                problems.append(f"--{flag}={value!r} is not one of: {', '.join(valid)}")

        check_choice(v.vision_backbone_id, VISION_BACKBONES.names(), "vla.vision_backbone_id")
        check_choice(v.llm_backbone_id, LLM_BACKBONES.names(), "vla.llm_backbone_id")
        check_choice(v.arch_specifier.split("+")[-1], PROJECTORS.names(), "vla.arch_specifier (projector part)")
        check_choice(v.image_resize_strategy, RESIZE_STRATEGIES, "vla.image_resize_strategy")
        check_choice(v.size, ("full", "small", "tiny"), "vla.size")
        check_choice(v.stage, [s.value for s in Stage], "vla.stage")
        check_choice(v.lr_schedule, [s.value for s in LRSchedule], "vla.lr_schedule")
        check_choice(self.parallel.sharding, [s.value for s in Sharding], "parallel.sharding")
        check_choice(self.logging.wandb_mode, ("online", "offline", "disabled"), "logging.wandb_mode")
        for t in self.logging.trackers:
            check_choice(t, ("jsonl", "wandb"), "logging.trackers")
        if self.lora.quantization is not None:
            check_choice(self.lora.quantization, ("4bit", "8bit"), "lora.quantization")
        per_step = v.per_device_batch_size * world_size
        if v.per_device_batch_size < 1:
            problems.append(f"--vla.per_device_batch_size must be >= 1, got {v.per_device_batch_size}")
        elif v.global_batch_size % per_step != 0 or v.global_batch_size < per_step:
            ok = per_step * max(1, round(v.global_batch_size / per_step))
            problems.append(
                f"--vla.global_batch_size={v.global_batch_size} is not a multiple of per_device_batch_size "
                f"({v.per_device_batch_size}) x world size ({world_size}) = {per_step}; set --vla.global_batch_size "
                f"{ok} or change --vla.per_device_batch_size"
            )
        if v.max_steps is not None and v.max_steps < 1:
            problems.append(f"--vla.max_steps must be >= 1 (or unset to use --vla.epochs), got {v.max_steps}")
        if v.action_head is not None:
            from prismatic.models.heads import ACTION_HEADS

            check_choice(v.action_head, ACTION_HEADS.names(), "vla.action_head")
            if v.action_head in ACTION_HEADS and ACTION_HEADS.get(v.action_head).parallel and v.action_dim is None:
                problems.append(f"--vla.action_head {v.action_head} predicts all chunk_len x action_dim slots at once: "
                                "set --vla.action_dim (7 for end-effector deltas + gripper)")  # fmt: skip
        for name in ("chunk_len", "action_dim"):
            value = getattr(v, name)
            if value is not None and value < 1:
                problems.append(f"--vla.{name} must be >= 1 (or unset), got {value}")
        if v.proprio_dim is not None and v.proprio_dim < 0:
            problems.append(f"--vla.proprio_dim must be >= 0 (0: no proprio), got {v.proprio_dim}")
        if v.cameras is not None and (not v.cameras or len(set(v.cameras)) != len(v.cameras)):
            problems.append(f"--vla.cameras must name distinct camera views, got {list(v.cameras)}")
        if v.lr_schedule == LRSchedule.STEP.value and (v.lr_decay_step is None or v.lr_decay_step < 1):
            problems.append(f"--vla.lr_schedule step needs --vla.lr_decay_step >= 1, got {v.lr_decay_step}")
        problems += self._numeric_problems()
        if not 0.0 <= v.warmup_ratio < 1.0:
            problems.append(f"--vla.warmup_ratio must be in [0, 1), got {v.warmup_ratio}")
        if v.learning_rate <= 0 or not math.isfinite(v.learning_rate):
            problems.append(f"--vla.learning_rate must be a positive number, got {v.learning_rate}")
        if self.parallel.prefetch_batches < 0:
            problems.append(
                f"--parallel.prefetch_batches must be >= 0 (0 prepares each batch inside the step), "
                f"got {self.parallel.prefetch_batches}"
            )
        if self.checkpoint.save_interval < 1:
            problems.append(f"--checkpoint.save_interval must be >= 1, got {self.checkpoint.save_interval}")
        if self.checkpoint.keep_last < 1:
            problems.append(f"--checkpoint.keep_last must be >= 1, got {self.checkpoint.keep_last}")
        if self.lora.enabled and v.base_vlm is None:
            problems.append("LoRA fine-tunes a pretrained model: set --vla.base_vlm to an HF-layout checkpoint dir")
        if self.lora.quantization is not None:
            problems += self._quantization_problems(world_size)
        if v.base_vlm is not None:  # everything it needs (checkpoint, ViT weights, tokenizer) is found now
            problems += base_vlm_problems(v.base_vlm, self.model_root, self.tokenizer, v.vision_weights)
        if v.base_vlm is None and v.size == "full":
            problems.append(
                "a full-size model needs pretrained weights: set --vla.base_vlm (random init is only for --vla.size tiny or small)"
            )
        if self.tokenizer is not None and not Path(self.tokenizer).is_dir():
            problems.append(f"--tokenizer={str(self.tokenizer)!r} is not a directory")
        if not Path(self.data_root).is_dir():
            problems.append(
                f"--data_root={str(self.data_root)!r} does not exist (expected <data_root>/<dataset>/<version>/)"
            )
        problems += self._data_problems()
        if problems:
            raise ConfigError("invalid training configuration:\n  - " + "\n  - ".join(problems))

    def _numeric_problems(self) -> list[str]:
        """Ranges of the numeric fields not checked above (each would fail later, far from its flag, or silently)."""
        v, problems = self.vla, []

        def need(ok: bool, flag: str, value, rule: str) -> None:
            if not ok:
                problems.append(f"--{flag} must be {rule}, got {value}")

        need(v.llm_max_length >= MIN_LLM_MAX_LENGTH, "vla.llm_max_length", v.llm_max_length,
             f">= {MIN_LLM_MAX_LENGTH} (the prompt plus 7 action tokens; shorter cuts every label)")  # fmt: skip
        if v.image_size is not None:
            patches = self._patch_sizes()
            need(v.image_size >= max(patches, default=1) and all(v.image_size % p == 0 for p in patches),
                 "vla.image_size", v.image_size,
                 f"a positive multiple of the backbone's patch size {'/'.join(map(str, patches)) or '?'} (or unset for "
                 "the backbone's native resolution)")  # fmt: skip
            if v.base_vlm is not None:
                problems.append(
                    f"--vla.image_size {v.image_size} cannot change the resolution of a pretrained checkpoint "
                    "(--vla.base_vlm fixes it): drop --vla.image_size"
                )
        need(v.shuffle_buffer_size >= 1, "vla.shuffle_buffer_size", v.shuffle_buffer_size, ">= 1")
        if v.max_steps is None:
            need(v.epochs >= 1, "vla.epochs", v.epochs, ">= 1 (or set --vla.max_steps)")
        need(math.isfinite(v.weight_decay) and v.weight_decay >= 0, "vla.weight_decay", v.weight_decay, ">= 0")
        need(v.max_grad_norm > 0, "vla.max_grad_norm", v.max_grad_norm,
             "> 0 (the clipping threshold; inf disables clipping, a negative one would reverse the gradients)")  # fmt: skip
        need(0 <= self.seed < 2**31, "seed", self.seed, "in [0, 2^31)")
        need(self.parallel.cpu_threads is None or self.parallel.cpu_threads >= 1, "parallel.cpu_threads",
             self.parallel.cpu_threads, ">= 1 (or unset to keep torch's default)")  # fmt: skip
        need(self.logging.log_interval >= 1, "logging.log_interval", self.logging.log_interval, ">= 1 (steps between metric lines)")
        need(self.lora.rank >= 1, "lora.rank", self.lora.rank, ">= 1")
        need(self.lora.alpha > 0, "lora.alpha", self.lora.alpha, "> 0")
        need(0 <= self.lora.dropout < 1, "lora.dropout", self.lora.dropout, "in [0, 1)")
        return problems

    def _patch_sizes(self) -> list[int]:
        """The ViT patch sizes of the chosen backbone (read from the timm model names, e.g. ..._patch14_...)."""
        if self.vla.vision_backbone_id not in VISION_BACKBONES.names():
            return []
        spec = VISION_BACKBONES.get(self.vla.vision_backbone_id)
        found = [re.search(r"patch(\d+)", timm_id) for timm_id in spec.timm_model_ids]
        return sorted({int(m.group(1)) for m in found if m})

    def _data_problems(self) -> list[str]:
        """--vla.data_mix resolves (every dataset has a spec, from the builtins or --dataset_configs) and
        every one of its datasets is under --data_root: all absent ones named, before a model is built."""
        try:
            all_dataset_specs(self.dataset_configs)
        except SpecError as e:
            return [f"--dataset_configs: {p}" for p in e.problems]
        flag = f"--vla.data_mix={self.vla.data_mix!r}"
        try:
            pairs = resolve_mixture(self.vla.data_mix, self.dataset_configs)
        except SpecError as e:
            return [f"{flag}: {p}" for p in e.problems]
        if not Path(self.data_root).is_dir():
            return []  # reported above
        absent = absent_datasets(self.data_root, [(spec.name, spec.version) for spec, _ in pairs])
        if not absent:
            return []
        return [
            f"{flag}: {len(absent)} of its {len(pairs)} datasets are not under --data_root={str(self.data_root)!r} "
            f"(expected {LAYOUT}; present: {present_datasets(self.data_root)}):\n      "
            + "\n      ".join(absent)
        ]

    def _quantization_problems(self, world_size: int) -> list[str]:
        """QLoRA: a frozen quantised base under adapters, loaded from an HF-layout checkpoint, not FSDP-sharded."""
        q, problems = self.lora.quantization, []
        if not self.lora.enabled:
            problems.append(
                f"--lora.quantization {q} quantises a frozen base under LoRA adapters: set --lora.enabled true "
                "(vla-scripts/finetune.py does) or drop --lora.quantization"
            )
        try:
            base = resolve_base_vlm(self.vla.base_vlm, self.model_root) if self.vla.base_vlm is not None else None
        except CheckpointError:  # (reported by validate)
            base = None
        if base is not None and not is_hf_dir(base):
            problems.append(
                f"--lora.quantization {q} loads the base through transformers' bitsandbytes integration, which reads "
                f"HF-layout checkpoints; --vla.base_vlm={str(base)!r} is not one: convert it with "
                "vla-scripts/extern/convert_native_to_hf.py and pass the output directory"
            )
        if world_size > 1 and self.parallel.sharding != Sharding.NO_SHARD.value:
            problems.append(
                f"--lora.quantization {q} with {world_size} processes: FSDP cannot shard bitsandbytes-quantised weights "
                f"(--parallel.sharding={self.parallel.sharding!r}); set --parallel.sharding no_shard (each process "
                "holds the whole quantised base, adapters' gradients are all-reduced) or run one process"
            )
        return problems


class ConfigError(UserError, ValueError):
    """One or more configuration problems, each naming its flag."""


# -- experiments ------------------------------------------------------------------------------------------
# The original's recipes (prismatic/conf/vla.py), with its ids. Batch sizes assume the original's 8 / 64 GPUs
# but any world size works: accumulation is derived. `base_vlm` defaults to the original's base VLM id, found
# under --model_root ($PRISMATIC_MODEL_ROOT); the architecture fields restate that base VLM's.
PRISM_DINOSIGLIP_7B = Path("prism-dinosiglip-224px+7b")  # DINOv2 + SigLIP 224px, Llama-2 7B, naive resize
SIGLIP_7B = Path("siglip-224px+7b")  # SigLIP So400m 224px, Vicuna v1.5 7B, letterbox, gelu-mlp


@VLAConfig.register_subclass("prism-dinosiglip-224px+mx-bridge")
@dataclass
class DinoSigLIPBridge(VLAConfig):
    base_vlm: Path | None = PRISM_DINOSIGLIP_7B
    data_mix: str = "bridge"
    shuffle_buffer_size: int = 256_000
    global_batch_size: int = 256
    per_device_batch_size: int = 32


@VLAConfig.register_subclass("prism-dinosiglip-224px-icy+mx-bridge")
@dataclass
class DinoSigLIPFrozenVisionBridge(DinoSigLIPBridge):
    stage: str = "frozen-vision"


@VLAConfig.register_subclass("prism-dinosiglip-224px+mx-oxe-magic-soup-plus")
@dataclass
class DinoSigLIPMagicSoupPlus(VLAConfig):
    """openvla-7b: 64 GPUs x 32, lr 2e-5 constant, Magic Soup++ (the released model's final stage)."""

    base_vlm: Path | None = PRISM_DINOSIGLIP_7B
    data_mix: str = "oxe_magic_soup_plus_minus"
    shuffle_buffer_size: int = 256_000
    global_batch_size: int = 2048
    per_device_batch_size: int = 32


@VLAConfig.register_subclass("siglip-224px+mx-bridge")
@dataclass
class SigLIPBridge(VLAConfig):
    """The original's SigLIP-only base (`siglip-224px+7b`: Vicuna v1.5 7B, letterbox), fully trained on Bridge."""

    base_vlm: Path | None = SIGLIP_7B
    vision_backbone_id: str = "siglip-vit-so400m"
    llm_backbone_id: str = "vicuna-v15-7b"
    arch_specifier: str = "no-align+gelu-mlp"
    image_resize_strategy: str = "letterbox"
    data_mix: str = "bridge"
    shuffle_buffer_size: int = 256_000
    global_batch_size: int = 256
    per_device_batch_size: int = 32


@VLAConfig.register_subclass("siglip-224px-icy+mx-bridge")
@dataclass
class SigLIPFrozenVisionBridge(SigLIPBridge):
    stage: str = "frozen-vision"


@VLAConfig.register_subclass("siglip-224px+mx-oxe-magic-soup")
@dataclass
class SigLIPMagicSoup(SigLIPBridge):
    data_mix: str = "oxe_magic_soup"
    global_batch_size: int = 2048


# Single-task fine-tuning on the original's T-DROID and DROID tasks, from the SigLIP base (full, frozen ViT,
# last LLM layer only, and "sandwich": ViT + projector + last LLM layer).
@VLAConfig.register_subclass("siglip-224px+mx-tdroid_carrot_in_bowl")
@dataclass
class SigLIPTDroidCarrotInBowl(SigLIPBridge):
    data_mix: str = "tdroid_carrot_in_bowl"


@VLAConfig.register_subclass("siglip-224px+mx-tdroid_pour_corn_in_pot")
@dataclass
class SigLIPTDroidPourCornInPot(SigLIPBridge):
    data_mix: str = "tdroid_pour_corn_in_pot"


@VLAConfig.register_subclass("siglip-224px-icy+mx-tdroid_carrot_in_bowl")
@dataclass
class SigLIPFrozenVisionTDroidCarrotInBowl(SigLIPTDroidCarrotInBowl):
    stage: str = "frozen-vision"


@VLAConfig.register_subclass("siglip-224px-last_layer+mx-tdroid_carrot_in_bowl")
@dataclass
class SigLIPLastLayerTDroidCarrotInBowl(SigLIPTDroidCarrotInBowl):
    stage: str = "last-layer"


@VLAConfig.register_subclass("siglip-224px-sandwich+mx-tdroid_carrot_in_bowl")
@dataclass
class SigLIPSandwichTDroidCarrotInBowl(SigLIPTDroidCarrotInBowl):
    stage: str = "sandwich"


@VLAConfig.register_subclass("siglip-224px+mx-droid_wipe")
@dataclass
class SigLIPDroidWipe(SigLIPBridge):
    data_mix: str = "droid_wipe"


@VLAConfig.register_subclass("prism-dinosiglip-224px+mx-libero-spatial")
@dataclass
class DinoSigLIPLiberoSpatial(VLAConfig):
    """Full fine-tuning on one LIBERO suite (the LoRA recipe is the same with --lora.enabled true)."""

    data_mix: str = "libero_spatial_no_noops"
    shuffle_buffer_size: int = 100_000
    image_aug: bool = True
    global_batch_size: int = 16
    per_device_batch_size: int = 16
    learning_rate: float = 5e-4


@VLAConfig.register_subclass("oft+mx-libero-spatial")
@dataclass
class OFTLiberoSpatial(VLAConfig):
    """OpenVLA-OFT's LIBERO recipe (its LIBERO.md and finetune.py): LoRA r=32 (vla-scripts/finetune.py) on
    openvla-7b, L1-regression head on chunks of 8, third-person + wrist images, 8-D proprio, batch 8 per GPU
    on 8 GPUs, lr 5e-4 dropping 10x after 100k steps, 150,005 steps, image augmentation. The other suites:
    --vla.data_mix libero_{object,goal,10}_no_noops (OFT found the 50k checkpoint best for libero_goal)."""

    data_mix: str = "libero_spatial_no_noops"
    shuffle_buffer_size: int = 100_000
    image_aug: bool = True
    action_head: str | None = "l1-regression"
    chunk_len: int | None = 8
    cameras: tuple[str, ...] | None = ("primary", "wrist")
    proprio_dim: int | None = 8
    action_dim: int | None = 7
    drop_incomplete_chunks: bool = True
    global_batch_size: int = 64
    per_device_batch_size: int = 8
    learning_rate: float = 5e-4
    lr_schedule: str = "step"
    lr_decay_step: int | None = 100_000
    max_steps: int | None = 150_005


@VLAConfig.register_subclass("tiny+mx-synthetic")
@dataclass
class TinySynthetic(VLAConfig):
    """Test-sized model with random weights; CPU-friendly. Its data is synthetic episodes with the
    `bridge_orig` schema (`prismatic.data.synthetic.write_synthetic`), hence that dataset name."""

    size: str = "tiny"
    data_mix: str = "bridge_orig"
    shuffle_buffer_size: int = 256
    global_batch_size: int = 4
    per_device_batch_size: int = 2
    learning_rate: float = 1e-3
    max_steps: int | None = 8
