import pytest

from prismatic.models.llm.prompting import PROMPT_BUILDERS, build_vla_prompt, get_prompt_builder


def test_vla_prompt_matches_openvla_format():
    assert build_vla_prompt("Pick up the RED block") == "In: What action should the robot take to pick up the red block?\nOut:"


@pytest.mark.parametrize("instruction", ["Pick up the RED block ", " open the drawer", "close it\n"])
def test_whitespace_stays_in_the_prompt_in_training_and_at_inference(instruction):
    """As the original (`lang.lower()` in its training transform, `instruction.lower()` in its inference prompt):
    lower-cased, never stripped; training's prompt tokens are inference's."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from prismatic.models.action_tokenizer import ActionTokenizer
    from prismatic.models.sample_encoder import SampleEncoder

    prompt = build_vla_prompt(instruction)
    assert prompt == f"In: What action should the robot take to {instruction.lower()}?\nOut:"
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "assets" / "openvla-tiny" / "checkpoint")
    training = SampleEncoder(tokenizer, lambda image: image, ActionTokenizer()).prompt_ids(instruction)  # training's encoder
    assert training == tokenizer(prompt, add_special_tokens=True).input_ids


def test_pure_builder_training_turns():
    pb = get_prompt_builder("pure")
    pb.add_turn("human", "What action should the robot take to x?")
    pb.add_turn("gpt", "ABC")
    assert pb.get_prompt() == "In: What action should the robot take to x?\nOut: ABC</s>"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("llama2-chat", "[INST] <<SYS>\n"),
        ("vicuna-v15", "A chat between a curious user"),
        ("mistral-instruct", "[INST] hi [/INST]"),
        ("phi-2", "<|endoftext|>Input: hi\nOutput:"),
        ("qwen-pure", "In: hi\nOut:"),
    ],
)
def test_family_formats(name, expected):
    assert get_prompt_builder(name).get_potential_prompt("hi").startswith(expected)


def test_turn_order_and_unknown_builder():
    pb = get_prompt_builder("pure")
    with pytest.raises(ValueError, match="must come from 'human'"):
        pb.add_turn("gpt", "x")
    with pytest.raises(KeyError, match="choose one of: .*pure"):
        PROMPT_BUILDERS.get("nope")


def test_prompt_ids_are_cached_per_instruction_as_fresh_lists_and_bounded(monkeypatch):
    """The encoder's per-instruction cache gives the tokenizer's ids, a list the caller may change without
    changing later answers, and keeps at most PROMPT_CACHE_SIZE instructions (the oldest goes first)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from prismatic.models import sample_encoder
    from prismatic.models.action_tokenizer import ActionTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "assets" / "openvla-tiny" / "checkpoint")
    calls = []
    counting = type("Counting", (), {"__call__": lambda self, text, **kw: calls.append(text) or tokenizer(text, **kw),
                                     "eos_token_id": tokenizer.eos_token_id})()  # fmt: skip
    monkeypatch.setattr(sample_encoder, "PROMPT_CACHE_SIZE", 2)
    encoder = sample_encoder.SampleEncoder(counting, lambda image: image, ActionTokenizer())
    first = encoder.prompt_ids("pick up the cube")
    assert first == tokenizer(build_vla_prompt("pick up the cube"), add_special_tokens=True).input_ids
    first.append(-1)  # the caller's list, not the cache's
    assert encoder.prompt_ids("pick up the cube") == first[:-1] and len(calls) == 1
    encoder.prompt_ids("open the drawer")
    encoder.prompt_ids("close the drawer")  # a third instruction: "pick up the cube" goes
    assert list(encoder._prompt_cache) == ["open the drawer", "close the drawer"]
    encoder.prompt_ids("pick up the cube")
    assert len(calls) == 4
