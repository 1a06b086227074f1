"""Benchmark the tabletop demo's per-frame input work (CPU), each part against its earlier form, same run.

A training frame costs, besides the model's step: decoding its images in tf.data (the observation and, with
OpenVLA's uniform goal relabelling, the goal image) and resizing them to the model's size; then, in Python,
the sample encoding (prompt ids, image tensor, action tokens). On the demo's 2-core machine that input work
shares the CPU with the training step, so every millisecond here is taken from it. Two parts changed:

  - `decode_resize`: frames already at the model's size skip the Lanczos pass, whose rounded output equals
    its input at scale 1 (`prismatic.data.obs_transforms.resize_image`); baseline: the original's formula
    (decode, then Lanczos-3 with antialiasing, round, clip) applied to every frame;
  - `prompt_ids`: `SampleEncoder.prompt_ids` caches the ids per instruction; baseline: the tokenizer call
    it made for every frame.

Frames are the demo's own (rendered by the tabletop environment at 84 px, PNG as the recorder writes them),
instructions the demo's, the tokenizer the demo's word tokenizer. Variants alternate round by round, so machine
noise hits both alike; the report gives medians of CPU microseconds per frame and the ratio.

    .venv/bin/python scripts/bench_input.py --out bench_results/input_cpu_tabletop.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402, F401  (torch before TensorFlow: the other import order crashes in this stack)
from bench_common import machine_info, write_report  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=256, help="distinct frames rendered (each round decodes them all)")
    p.add_argument("--size", type=int, default=84, help="rendered and model resolution (the demo's: 84)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per part")
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    a = p.parse_args(argv)
    for flag in ("frames", "size", "rounds"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(a, flag)}")
    return a


def cpu_us_per_item(fn, n: int) -> float:
    t = time.process_time()  # all threads of the process: tf.data's work counts too
    fn()
    return 1e6 * (time.process_time() - t) / n


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    import numpy as np
    import tensorflow as tf
    from transformers import AutoTokenizer

    from prismatic.data.obs_transforms import decode_and_resize
    from prismatic.data.synthetic import encode_image
    from prismatic.envs import tabletop
    from prismatic.models.action_tokenizer import ActionTokenizer
    from prismatic.models.sample_encoder import SampleEncoder

    env = tabletop.TabletopEnv(image_size=a.size, num_objects=3)
    images, instructions = [], []
    for seed in range(a.frames):
        obs, info = env.reset(seed=seed)
        images.append(encode_image(np.asarray(obs["image"]), "png"))
        instructions.append(info["instruction"])
    size = (a.size, a.size)

    def original(encoded: tf.Tensor) -> tf.Tensor:  # the original's decode + resize, for every frame
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        out = tf.image.resize(image, size, method="lanczos3", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    def library(encoded: tf.Tensor) -> tf.Tensor:
        return decode_and_resize({"image_x": encoded}, resize_size={"x": size}, depth_resize_size={})["image_x"]

    # Two images per frame (observation + goal), as the demo's pipeline decodes them; one thread, no prefetch.
    source = tf.data.Dataset.from_tensor_slices(tf.constant(images)).map(lambda e: (e, e))
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    decoders = {"original": original, "skip_same_size": library}
    streams = {k: source.map(lambda o, g, f=f: (f(o), f(g))).with_options(options) for k, f in decoders.items()}
    reference, shortcut = ([x for x in streams[k].as_numpy_iterator()] for k in decoders)  # also the warm-up
    if not all(np.array_equal(p, q) for r, s in zip(reference, shortcut) for p, q in zip(r, s)):
        raise RuntimeError("the same-size shortcut changed a frame: resize_image no longer gives the original's output")

    tokenizer = AutoTokenizer.from_pretrained(REPO / "prismatic" / "assets" / "tokenizers" / "tabletop")
    encoder = SampleEncoder(tokenizer, lambda image: image, ActionTokenizer(vocab_size=len(tokenizer)))

    tokenize = encoder._tokenize_prompt  # what prompt_ids did for every frame before the cache
    if [encoder.prompt_ids(i) for i in instructions] != [tokenize(i) for i in instructions]:
        raise RuntimeError("cached prompt ids differ from the tokenizer's")
    calls = instructions * max(1, 4096 // len(instructions))  # enough calls for the CPU clock to see the cached ones
    encodes = {k: (lambda f=f: [f(i) for i in calls]) for k, f in
               {"tokenizer_per_frame": tokenize, "cached": encoder.prompt_ids}.items()}  # fmt: skip

    parts = {  # part -> (its variants, baseline first; frames each call covers)
        "decode_resize": ({k: (lambda ds=ds: [None for _ in ds]) for k, ds in streams.items()}, a.frames),
        "prompt_ids": (encodes, len(calls)),
    }
    results = {}
    for part, (variants, n) in parts.items():
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(a.rounds):
            for k, fn in variants.items():
                times[k].append(cpu_us_per_item(fn, n))
        med = {k: round(statistics.median(v), 2) for k, v in times.items()}
        base, new = list(med.values())
        results[part] = {"cpu_us_per_frame_median": med, "rounds": {k: [round(x, 2) for x in v] for k, v in times.items()},
                         "speedup": round(base / new, 2)}  # fmt: skip
        print(f"{part:14s} " + "  ".join(f"{k} {v:8.1f} us/frame" for k, v in med.items()) + f"   {base / new:.2f}x")
    machine = {**machine_info("cpu"), "tensorflow": tf.__version__}
    report = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}, "machine": machine,
              "results": results}  # fmt: skip
    if a.out is not None:
        write_report(a.out, report)
    return report


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
