"""Prompt builders: how each LLM family wraps user and model turns (faithful to the original formats).

A builder accumulates a conversation; `get_prompt()` returns the text to tokenise (the tokenizer adds
BOS itself, so a leading BOS string is stripped). VLAs use a single human turn
`What action should the robot take to {instruction}?` followed by the action tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from prismatic.util.registry import Registry

PROMPT_BUILDERS: Registry[type[PromptBuilder]] = Registry("prompt builder", flag="model.llm_backbone_id")

VLA_QUESTION = "What action should the robot take to {instruction}?"

_LLAMA2_CHAT_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def vla_instruction(instruction: str) -> str:
    """A language instruction as it goes into the prompt, in training and at inference alike: lower-cased,
    nothing else. Leading and trailing whitespace stays inside the prompt ("take to pick up the cup ?"), as in
    the original's training data transform and its inference prompt; released checkpoints saw it that way."""
    return instruction.lower()


@dataclass
class PromptBuilder:
    """Base class: plain `In: ...\\nOut: ...` turns ("pure" prompting, used by OpenVLA on Llama-2)."""

    system_prompt: str | None = None
    bos: str = "<s>"
    eos: str = "</s>"

    def __post_init__(self) -> None:
        self.prompt, self.turn_count = "", 0

    # Family-specific wrappers ------------------------------------------------------------------
    def wrap_human(self, message: str) -> str:
        return f"In: {message}\nOut: "

    def wrap_gpt(self, message: str) -> str:
        return f"{message if message != '' else ' '}{self.eos}"

    def wrap_first_human(self, message: str) -> str:
        """The first human turn (where a system prompt goes, if the family has one)."""
        return self.wrap_human(message)

    # Conversation -----------------------------------------------------------------------------
    def add_turn(self, role: str, message: str) -> str:
        expected = "human" if self.turn_count % 2 == 0 else "gpt"
        if role != expected:
            raise ValueError(f"Turn {self.turn_count} must come from {expected!r}, got {role!r}")
        message = message.replace("<image>", "").strip()
        if role == "human":
            wrapped = self.wrap_first_human(message) if self.turn_count == 0 else self.wrap_human(message)
        else:
            wrapped = self.wrap_gpt(message)
        self.prompt += wrapped
        self.turn_count += 1
        return wrapped

    def get_potential_prompt(self, message: str) -> str:
        """The prompt if the human said `message` next (the model's answer not yet there)."""
        wrap = self.wrap_first_human if self.turn_count == 0 else self.wrap_human
        return self._finish(self.prompt + wrap(message))

    def get_prompt(self) -> str:
        return self._finish(self.prompt)

    def _finish(self, text: str) -> str:
        return text.removeprefix(self.bos).rstrip()


@PROMPT_BUILDERS.register("pure")
class PurePromptBuilder(PromptBuilder):
    pass


@PROMPT_BUILDERS.register("llama2-chat")
@dataclass
class Llama2ChatPromptBuilder(PromptBuilder):
    def __post_init__(self) -> None:
        super().__post_init__()
        system = (self.system_prompt or _LLAMA2_CHAT_SYSTEM).strip()
        # The original's system header reads "<<SYS>\n" (sic); checkpoints were trained with it.
        self._system_block = f"<<SYS>\n{system}\n<</SYS>>\n\n"

    def wrap_human(self, message: str) -> str:
        return f"[INST] {message} [/INST] "

    def wrap_first_human(self, message: str) -> str:
        return self.wrap_human(self._system_block + message)


@PROMPT_BUILDERS.register("vicuna-v15")
@dataclass
class VicunaV15PromptBuilder(PromptBuilder):
    def wrap_human(self, message: str) -> str:
        return f"USER: {message} ASSISTANT: "

    def wrap_first_human(self, message: str) -> str:
        return (self.system_prompt or _VICUNA_SYSTEM).strip() + " " + self.wrap_human(message)


@PROMPT_BUILDERS.register("mistral-instruct")
@dataclass
class MistralInstructPromptBuilder(PromptBuilder):
    def wrap_human(self, message: str) -> str:
        return f"[INST] {message} [/INST] "


@PROMPT_BUILDERS.register("phi-2")
@dataclass
class Phi2PromptBuilder(PromptBuilder):
    """Phi-2 has no BOS in its tokenizer, so the first human turn carries it as text."""

    bos: str = "<|endoftext|>"
    eos: str = "<|endoftext|>"

    def wrap_human(self, message: str) -> str:
        return f"Input: {message}\nOutput: "

    def wrap_gpt(self, message: str) -> str:
        return f"{message if message != '' else ' '}\n{self.eos}"

    def wrap_first_human(self, message: str) -> str:
        return self.bos + self.wrap_human(message)

    def _finish(self, text: str) -> str:
        return text.rstrip()


@PROMPT_BUILDERS.register("qwen-pure")
@dataclass
class QwenPurePromptBuilder(PromptBuilder):
    """Pure prompting for Qwen2.5 (no BOS token; `<|endoftext|>` ends a turn)."""

    bos: str = ""
    eos: str = "<|endoftext|>"


def get_prompt_builder(name: str, system_prompt: str | None = None) -> PromptBuilder:
    return PROMPT_BUILDERS.get(name)(system_prompt=system_prompt)


def build_vla_prompt(instruction: str, builder: str = "pure") -> str:
    """The inference prompt for a VLA, e.g. `In: What action should the robot take to {instr}?\\nOut:`."""
    pb = get_prompt_builder(builder)
    return pb.get_potential_prompt(VLA_QUESTION.format(instruction=vla_instruction(instruction)))
