"""Fast decoding of discrete action tokens: one prefill, then the decoding steps on a static KV cache,
replayed as a CUDA graph on CUDA devices.

OpenVLA's action is 7 tokens: a prefill over ~280 positions (256 image patches), then 6 single-token steps.
At batch 1 each step is a pass over all LLM weights (13.2 GB for Llama-2 7B in bf16) split into ~500
small kernels; eagerly, the Python and launch overhead of those kernels is a large part of a step. Here:

- The prefill is the eager path's own call (`model(..., use_cache=True)`), so the first token and the
  cached keys/values are the eager path's exactly. They are then copied into a preallocated cache of a
  bucketed length (`CACHE_BUCKET`), which gives the decoding steps fixed shapes.
- The decoding steps read and write only preallocated tensors: the cache (a transformers `Cache` of
  `StaticLayer`s, whose write position is a device tensor), the token, the positions and the attention
  mask, all derived on the device. Nothing in them reads a tensor value on the host (tested on CPU), which
  is what CUDA graph capture requires.
- With `decode="graphs"` (the default on CUDA) the greedy steps are captured once per (batch, cache
  bucket, step count) as one CUDA graph and replayed: one launch for all 6 steps. Why graphs and not
  `torch.compile(mode="reduce-overhead")`: capture takes about one step's time instead of a compilation of
  tens of seconds per shape, it runs the very kernels of the static path (so its tokens are those of the
  static path), and it needs nothing from the model code beyond plain tensor ops.

Left-padded batches work: each row's positions and key mask come from its own attention mask. Sampling
(`do_sample=True`) runs the same steps uncaptured (its random draws come from the caller's generator).
The graphs hold pointers to the weights: they are recaptured when any weight tensor of the LLM is
replaced (e.g. `.to(...)`), and stay valid under in-place updates (`load_state_dict`, optimiser steps).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from transformers.cache_utils import Cache, StaticLayer

from prismatic.util.logging import get_logger

logger = get_logger(__name__)

DECODE_MODES = ("auto", "eager", "static", "graphs")
CACHE_BUCKET = 64  # cache lengths are rounded up to a multiple of this: one graph serves a range of prompts
MAX_SLOTS = 4  # (batch, bucket, steps) combinations kept per model, least recently used dropped first
_MASKABLE_ATTENTION = ("sdpa", "eager")  # attention implementations that take our 4-D mask as is

Pick = Callable[[torch.Tensor], torch.Tensor]  # logits [B, V] -> next token ids [B, 1]


def _attn_implementation(model: nn.Module) -> str:
    return getattr(model.language_model.config, "_attn_implementation", None) or "eager"


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def resolve_decode_mode(mode: str, model: nn.Module) -> str:
    """The decoding path `mode` selects for `model`: "eager", "static" or "graphs".

    "auto" is "graphs" on a CUDA device for a model that is not bitsandbytes-quantised (LLM.int8 decides
    its outlier columns on the host, so it cannot be captured) and whose attention takes a 4-D mask;
    "eager" otherwise: on a CPU there is no launch overhead to remove, and the static cache only makes
    attention span the bucket's padding (measured in docs/benchmarks.md).
    """
    if mode not in DECODE_MODES:
        raise ValueError(f"decode={mode!r} is not one of: {', '.join(DECODE_MODES)}")
    attn = _attn_implementation(model)
    if mode == "auto":
        ok = model.device.type == "cuda" and not is_quantized(model) and attn in _MASKABLE_ATTENTION
        return "graphs" if ok else "eager"
    if mode != "eager" and attn not in _MASKABLE_ATTENTION:
        raise ValueError(
            f"decode={mode!r} needs an attention implementation that takes a 4-D mask ({', '.join(_MASKABLE_ATTENTION)}), "
            f"but the model uses {attn!r}: load it with attn_implementation='sdpa', or use decode='eager'"
        )
    if mode == "graphs" and model.device.type != "cuda":
        raise ValueError(
            f"decode='graphs' captures CUDA graphs, but the model is on {model.device.type!r}: use decode='static' "
            "(the same static-cache steps without capture) or 'eager'"
        )
    return mode


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1, keepdim=True)


def sampler(temperature: float, generator: torch.Generator | None) -> Pick:
    """What the eager loop draws: softmax(logits / temperature), one multinomial draw per row."""

    def pick(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    return pick


@dataclass
class _Slot:
    """Preallocated state for one (batch, cache length, step count): every tensor the steps touch."""

    cache: Cache
    start: torch.Tensor  # [] cache position of the first decoding step (= prefill length)
    positions: torch.Tensor  # [B, 1] position id of the first decoding step, per row
    key_valid: torch.Tensor  # [B, C] keys a row may attend to (padding excluded; causality added per step)
    arange: torch.Tensor  # [C]
    token: torch.Tensor  # [B, 1] token fed to the first step
    out: torch.Tensor  # [B, steps] tokens the steps produce
    steps: int
    graph: torch.cuda.CUDAGraph | None = None

    @classmethod
    def allocate(cls, n_layers: int, batch: int, length: int, steps: int, device: torch.device) -> _Slot:
        long = dict(dtype=torch.long, device=device)
        return cls(
            cache=Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(n_layers)]),
            start=torch.zeros((), **long), positions=torch.zeros(batch, 1, **long),
            key_valid=torch.ones(batch, length, dtype=torch.bool, device=device), arange=torch.arange(length, device=device),
            token=torch.zeros(batch, 1, **long), out=torch.zeros(batch, steps, **long), steps=steps,
        )  # fmt: skip

    def load_prefill(self, past: Cache, text_mask: torch.Tensor | None, n_text: int) -> None:
        """Copy the prefill's keys/values and derive the start position, per-row positions and key mask."""
        length = past.get_seq_length()
        for layer, prefilled in zip(self.cache.layers, past.layers):
            if not layer.is_initialized:
                layer.lazy_initialization(prefilled.keys, prefilled.values)
            layer.keys[:, :, :length].copy_(prefilled.keys)
            layer.values[:, :, :length].copy_(prefilled.values)
        self.start.fill_(length)
        self.key_valid.fill_(True)
        if text_mask is None:
            self.positions.fill_(length)
        else:
            # Left padding: the prefill's multimodal mask is the text mask followed by ones (the image
            # patches sit after each row's first real token, inside its run of ones).
            self.key_valid[:, :n_text].copy_(text_mask.bool())
            self.positions.copy_(self.key_valid[:, :length].sum(dim=1, keepdim=True))


class StaticDecoder:
    """Static-cache decoding (and its CUDA graphs) for one model; `decoder_for(model)` keeps one per model."""

    def __init__(self, model: nn.Module, bucket: int = CACHE_BUCKET, max_slots: int = MAX_SLOTS) -> None:
        self._model = weakref.ref(model)
        self.bucket, self.max_slots = bucket, max_slots
        self._slots: OrderedDict[tuple, _Slot] = OrderedDict()
        self._weights: tuple[int, ...] = ()
        self._pool = None
        self._lock = threading.Lock()  # one decode at a time: the slots are shared state
        self.capture_error: str | None = None  # why graphs are not used, if capture failed

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this decoder was garbage-collected")
        return model

    def clear(self) -> None:
        """Drop every cache and graph (frees their device memory)."""
        with self._lock:
            self._slots.clear()
            self._pool = None

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        n_tokens: int,
        pick: Pick = greedy,
        graphs: bool = False,
        **prefill_kwargs: Any,
    ) -> torch.Tensor:
        """`n_tokens` tokens per row [B, n_tokens]. `input_ids` are the full prompt (with the empty token the
        model expects before actions); `attention_mask` is None or left-padded; `prefill_kwargs` go to the
        prefill's forward (e.g. a proprioceptive state)."""
        model = self.model
        if attention_mask is not None and not bool((attention_mask[:, 1:] >= attention_mask[:, :-1]).all()):
            raise ValueError(
                "static decoding needs a left-padded attention mask (generated tokens are appended on the right); "
                "the processor pads on the left"
            )
        out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, use_cache=True,
                    logits_to_keep=1, **prefill_kwargs)  # fmt: skip
        first = pick(out.logits[:, -1])
        if n_tokens == 1:
            return first
        past, batch, steps = out.past_key_values, input_ids.shape[0], n_tokens - 1
        length = -(-(past.get_seq_length() + steps) // self.bucket) * self.bucket
        with self._lock:
            slot = self._slot(batch, length, steps, first.device)
            slot.load_prefill(past, attention_mask, input_ids.shape[1])
            del out, past  # the dynamic cache is no longer needed
            slot.token.copy_(first)
            if graphs and pick is greedy:
                self._replay(slot)
            else:
                self.run_steps(slot, pick)
            tokens = slot.out.clone()
        return torch.cat([first, tokens], dim=1)

    def run_steps(self, slot: _Slot, pick: Pick) -> None:
        """The decoding steps on the slot's tensors (what a graph captures): step k feeds token k at cache
        position start + k and writes token k + 1."""
        lm = self.model.language_model
        additive = _attn_implementation(self.model) == "eager"  # eager attention adds its mask to the scores
        dtype = next(lm.parameters()).dtype if additive else None
        for layer in slot.cache.layers:
            layer.cumulative_length.copy_(slot.start)  # write position of the first step
        token = slot.token
        for k in range(slot.steps):
            visible = slot.key_valid & (slot.arange <= slot.start + k)  # padding out, and no future keys
            mask = visible[:, None, None, :]
            if additive:
                mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
            logits = lm(input_ids=token, attention_mask=mask, position_ids=slot.positions + k, past_key_values=slot.cache,
                        use_cache=True, logits_to_keep=1).logits[:, -1]  # fmt: skip
            token = pick(logits)
            slot.out[:, k : k + 1].copy_(token)

    # -- internals -----------------------------------------------------------------------------
    def _slot(self, batch: int, length: int, steps: int, device: torch.device) -> _Slot:
        weights = self._weight_pointers()
        if weights != self._weights:  # a weight tensor was replaced: captured graphs would read stale memory
            self._slots.clear()
            self._weights = weights
        key = (batch, length, steps)
        if key in self._slots:
            self._slots.move_to_end(key)
        else:
            while len(self._slots) >= self.max_slots:
                self._slots.popitem(last=False)
            n_layers = self.model.language_model.config.num_hidden_layers
            self._slots[key] = _Slot.allocate(n_layers, batch, length, steps, device)
        return self._slots[key]

    def _weight_pointers(self) -> tuple[int, ...]:
        lm = self.model.language_model
        return tuple(t.data_ptr() for t in (*lm.parameters(), *lm.buffers()))

    def _replay(self, slot: _Slot) -> None:
        if self.capture_error is not None:  # capture failed once for this model: run uncaptured
            self.run_steps(slot, greedy)
            return
        if slot.graph is None:
            try:
                self._capture(slot)
            except RuntimeError as e:  # e.g. a kernel that syncs with the host (some quantised layers)
                self.capture_error = f"{type(e).__name__}: {e}"
                logger.warning("CUDA graph capture failed (%s); decoding without graphs", self.capture_error)
                torch.cuda.synchronize()
                self.run_steps(slot, greedy)
                return
        slot.graph.replay()

    def _capture(self, slot: _Slot) -> None:
        # Warm up on a side stream first (lazy initialisation of cuBLAS and the allocator must not happen
        # during capture), then capture all steps as one graph. Graphs share one memory pool: they never
        # run at the same time.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.run_steps(slot, greedy)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (a server's) may keep using the GPU while this one captures
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            self.run_steps(slot, greedy)
        slot.graph = graph


_DECODERS: weakref.WeakKeyDictionary[nn.Module, StaticDecoder] = weakref.WeakKeyDictionary()


def decoder_for(model: nn.Module) -> StaticDecoder:
    """The model's `StaticDecoder` (created on first use, dropped with the model)."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = StaticDecoder(model)
    return decoder


def decode_action_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    n_tokens: int,
    mode: str,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    **prefill_kwargs: Any,
) -> torch.Tensor:
    """The hook the model's token generation calls for `mode` "static" or "graphs" (see
    `resolve_decode_mode`): `n_tokens` tokens per row, [B, n_tokens], the eager loop's tokens. Inputs as the
    eager loop's prefill takes them (the empty token appended, an all-ones mask dropped)."""
    pick = sampler(temperature, generator) if do_sample else greedy
    return decoder_for(model).generate(
        input_ids, pixel_values, attention_mask, n_tokens, pick, graphs=mode == "graphs", **prefill_kwargs
    )
