import pytest

from prismatic.models.llm.prompting import PROMPT_BUILDERS, build_vla_prompt, get_prompt_builder


def test_vla_prompt_matches_openvla_format():
    assert build_vla_prompt("Pick up the RED block ") == "In: What action should the robot take to pick up the red block?\nOut:"


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
