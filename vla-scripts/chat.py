"""Chat with a VLM (a VLM run, one of its checkpoints/*.pt, or a prismatic-vlms release directory).

    # one answer
    python vla-scripts/chat.py --checkpoint runs/toy-ft --image scene.png --prompt "What colour is the cube?"
    # a caption, as the align stage trains it (no prompt)
    python vla-scripts/chat.py --checkpoint runs/toy-align --image scene.png --caption
    # a conversation about one image (each answer is added to the history; an empty line or Ctrl-D ends)
    python vla-scripts/chat.py --checkpoint /ckpts/prism-dinosiglip-224px+7b --vision_weights /ckpts/timm --image x.jpg

Greedy decoding unless --do_sample (then --seed makes it repeatable).
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import draccus


@dataclass
class ChatConfig:
    # fmt: off
    checkpoint: Path = Path("runs/vlm")    # VLM run dir, its checkpoints/*.pt, or a prismatic-vlms release dir
    image: Path | None = None               # the image to talk about (required)
    prompt: str | None = None               # answer this one prompt and exit (else: a conversation on stdin)
    caption: bool = False                   # caption the image (the align stage's input: no prompt) and exit
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    device: str | None = None               # None: cuda if available, else cpu
    tokenizer: Path | None = None           # tokenizer dir (default: the run's, else the LLM's own)
    vision_weights: Path | None = None      # timm weights for a release / align run without ViT weights
    llm_weights: str | None = None          # the LLM's HF dir or Hub id for an align run (it holds no LLM)
    # fmt: on


@draccus.wrap()
def main(cfg: ChatConfig) -> None:
    import torch
    from PIL import Image

    from prismatic.vlm import load_vlm

    if cfg.image is None or not cfg.image.is_file():
        raise FileNotFoundError(f"--image={str(cfg.image)!r} is not an image file: pass the image to talk about")
    image = Image.open(cfg.image).convert("RGB")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else None
    vlm = load_vlm(cfg.checkpoint, device=device, dtype=dtype, tokenizer=cfg.tokenizer,
                   vision_weights=cfg.vision_weights, llm_weights=cfg.llm_weights)  # fmt: skip
    torch.manual_seed(cfg.seed)
    kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, temperature=cfg.temperature)
    if cfg.caption or cfg.prompt is not None:
        print(vlm.generate(image, None if cfg.caption else cfg.prompt, **kwargs))
        return
    history: list[tuple[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"prompt format: {vlm.prompt_text('<your question>')!r}\n(an empty line or Ctrl-D ends the chat)")
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        answer = vlm.generate(image, line.strip(), history=history, **kwargs)
        history.append((line.strip(), answer))
        print(f"vlm> {answer}" if interactive else answer, flush=True)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
