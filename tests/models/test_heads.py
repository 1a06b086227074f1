"""The action-head seam: the registry, one sample encoder for training and inference (every LLM backbone),
the bidirectional attention of parallel heads through transformers' public mask argument (every family),
several cameras through the vision backbone, the contract recorded in both checkpoint layouts, and the
errors a wrong input gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.heads import ACTION_HEADS
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.llm.prompting import build_vla_prompt
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.models.sample_encoder import EncodingError, SampleEncoder
from prismatic.models.vision.backbones import VISION_BACKBONES, VisionBackbone
from prismatic.training.model_setup import BUNDLED_TOKENIZER

VISION = "dinosiglip-vit-so-224px"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(BUNDLED_TOKENIZER)


def tiny_config(llm_id: str = "llama2-7b-pure", vocab: int = 32064, **kw) -> OpenVLAConfig:
    llm, pad = LLM_BACKBONES.get(llm_id), min(32000, vocab - 1)
    text = llm.text_config(tiny=True, vocab_size=vocab, pad_token_id=pad, bos_token_id=1, eos_token_id=2).to_dict()
    return OpenVLAConfig(vision_backbone_id=VISION, llm_backbone_id=llm_id, text_config=text, pad_token_id=pad,
                         timm_model_kwargs=VISION_BACKBONES.get(VISION).tiny_kwargs(), image_sizes=[112, 112],
                         action_vocab_size=min(32000, vocab - 64), **kw)  # fmt: skip


OFT_STYLE = dict(action_head="l1-regression", cameras=["primary", "wrist"], proprio_dim=8, chunk_len=4, action_dim=7)
STATS = {"robot": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "min": [-2.0] * 7, "max": [2.0] * 7,
                              "mean": [0.0] * 7, "std": [1.0] * 7, "mask": [True] * 6 + [False]},
                   "proprio": {"q01": [-1.0] * 8, "q99": [3.0] * 8, "min": [-2.0] * 8, "max": [4.0] * 8,
                               "mean": [0.0] * 8, "std": [1.0] * 8}}}  # fmt: skip


def random_vla(tokenizer, seed: int = 0, **kw):
    from prismatic.models.load import build_processor
    from prismatic.models.vla import VLA

    torch.manual_seed(seed)
    config = tiny_config(**kw, norm_stats=json.loads(json.dumps(STATS)))
    return VLA(OpenVLAForActionPrediction(config).eval(), build_processor(config, tokenizer))


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(n)]


def test_registry_and_config_errors_name_the_choices_and_the_fix():
    assert ACTION_HEADS.names() == ["bins", "bins-parallel", "l1-regression"]
    with pytest.raises(KeyError, match="Unknown action head 'diffusion'.*choose one of: bins, bins-parallel, l1-regression"):
        tiny_config(action_head="diffusion")
    with pytest.raises(ValueError, match="'l1-regression' predicts chunk_len x action_dim slots at once: set action_dim"):
        tiny_config(action_head="l1-regression")
    with pytest.raises(ValueError, match="chunk_len must be an integer >= 1, got 0"):
        tiny_config(chunk_len=0)
    with pytest.raises(ValueError, match="distinct names"):
        tiny_config(cameras=["primary", "primary"])


@pytest.mark.parametrize("head", ["bins", "l1-regression"])
@pytest.mark.parametrize("llm_id", LLM_BACKBONES.names())
def test_training_sample_and_inference_input_agree_up_to_the_actions(tokenizer, llm_id, head):
    """The training transform, `VLA.predict_*` (encoder) and `predict_action(**processor(...))` (model) feed
    the same tokens before the actions, including the backbone's own empty token (Mistral: 28705, not
    Llama-2's 29871), and put the action slots at the same positions."""
    kw = dict(action_head=head, chunk_len=2, action_dim=7)
    config = tiny_config(llm_id, **kw)
    with torch.device("meta"):  # the layout needs the config only
        model = OpenVLAForActionPrediction(config)
    encoder = SampleEncoder.for_model(config, tokenizer, lambda img: torch.zeros(6, 4, 4))
    instruction = "Put the Spoon in the pot "
    train = encoder.training_sample(instruction, np.zeros((2, 7)), [None])
    infer = encoder.inference_inputs([instruction], [[None]])
    prompt = tokenizer(build_vla_prompt(instruction, config.prompt_builder), return_tensors="pt")
    via_processor, _, slots = model.complete_inference_ids(prompt.input_ids, prompt.attention_mask)

    first_slot = int(torch.nonzero(train["action_mask"])[0])
    context = train["input_ids"][:first_slot].tolist()
    assert infer["input_ids"][0, :first_slot].tolist() == context == via_processor[0, :first_slot].tolist()
    empty = LLM_BACKBONES.get(llm_id).empty_token_id
    assert context[-1] == empty if empty is not None else context == prompt.input_ids[0].tolist()
    assert config.empty_token_id == empty
    n_slots = 2 * 7
    assert int(train["action_mask"].sum()) == n_slots and train["input_ids"][-1] == tokenizer.eos_token_id
    if ACTION_HEADS.get(head).parallel:  # slots at the same places, then the stop token
        assert torch.equal(infer["action_mask"][0], train["action_mask"]) and torch.equal(slots[0], train["action_mask"])
        assert infer["input_ids"].shape[1] == len(train["input_ids"]) and infer["input_ids"][0, -1] == tokenizer.eos_token_id
    else:  # autoregressive: generation starts right after the context
        assert infer["input_ids"].shape[1] == first_slot and infer["action_mask"] is None


@pytest.mark.parametrize("llm_id", ["llama2-7b-pure", "mistral-v0.1-7b-pure", "phi-2-3b", "qwen2.5-0.5b-pure"])
def test_parallel_heads_attend_bidirectionally_in_every_family(tokenizer, llm_id):
    """Changing the last token (the stop token) changes the first slot row only under bidirectional attention,
    and the SDPA and eager paths read the 4-D mask alike."""
    rows = {}
    for head in ("l1-regression", "bins"):
        torch.manual_seed(0)
        kw = dict(action_head=head, chunk_len=2, action_dim=7)
        model = OpenVLAForActionPrediction(tiny_config(llm_id, vocab=512, **kw)).eval()
        ids = torch.randint(3, 500, (1, 30))
        slots = torch.zeros_like(ids, dtype=torch.bool)
        slots[0, -15:-1] = True
        pixels = torch.randn(1, 6, 112, 112)
        with torch.no_grad():
            a, mm_slots = model.last_hidden_state(ids, pixels, action_mask=slots)
            other = ids.clone()
            other[0, -1] += 1
            b, _ = model.last_hidden_state(other, pixels, action_mask=slots)
        first = int(torch.nonzero(mm_slots[0])[0]) - 1  # the row read for the first slot
        rows[head] = (a[0, first] - b[0, first]).abs().max().item()
        if head == "l1-regression":
            model.set_attn_implementation("eager")
            with torch.no_grad():
                eager, _ = model.last_hidden_state(ids, pixels, action_mask=slots)
            torch.testing.assert_close(eager, a, rtol=1e-4, atol=1e-5)
    assert rows["l1-regression"] > 1e-3 and rows["bins"] == 0.0


def test_each_camera_goes_through_every_vit(tokenizer):
    """Two images side by side on channels give the single-image features of each, in camera order."""
    kwargs = VISION_BACKBONES.get(VISION).tiny_kwargs()
    ids = VISION_BACKBONES.get(VISION).timm_model_ids
    torch.manual_seed(0)
    two = VisionBackbone(ids, [112, 112], timm_kwargs=kwargs, num_images=2).eval()
    one = VisionBackbone(ids, [112, 112], timm_kwargs=kwargs, num_images=1).eval()
    one.load_state_dict(two.state_dict())
    x = torch.randn(3, 12, 112, 112)
    with torch.no_grad():
        both = two(x)
        each = torch.cat([one(x[:, :6]), one(x[:, 6:])], dim=1)
    assert both.shape == (3, 2 * one.num_patches, one.embed_dim)
    torch.testing.assert_close(both, each, rtol=1e-5, atol=1e-5)  # fp32; only the batch size of the matmuls differs
    with pytest.raises(ValueError, match=r"\[batch, 12, 112, 112\] \(2 image\(s\) x 2 featurizer"):
        two(x[:, :6])


def test_contract_is_recorded_and_round_trips_in_both_layouts(tokenizer, tmp_path):
    from prismatic.models.load import load_vla

    vla = random_vla(tokenizer, **OFT_STYLE)
    obs, state = [images(2)], np.array([[0.5, -1.0, 2.0, 0.0, 1.0, 3.5, -0.5, 1.5]])
    want = vla.predict_chunks(obs, ["open the drawer"], proprio=state)
    assert want.shape == (1, 4, 7)
    hf = vla.save_pretrained(tmp_path / "hf")
    native = vla.save_native(tmp_path / "native")
    recorded = [json.loads((hf / "config.json").read_text()), json.loads((native / "config.json").read_text())["model"]]
    for config in recorded:
        assert {k: config[k] for k in OFT_STYLE} == OFT_STYLE
    for path in (hf, native):
        got = load_vla(path)
        assert (got.chunk_len, got.cameras, got.proprio_dim, got.action_dim()) == (4, ("primary", "wrist"), 8, 7)
        np.testing.assert_array_equal(got.predict_chunks(obs, ["open the drawer"], proprio=state), want)
    # OpenVLA's defaults are written out too (not left implicit)
    bins = random_vla(tokenizer).save_pretrained(tmp_path / "bins")
    config = json.loads((bins / "config.json").read_text())
    assert (config["action_head"], config["chunk_len"], config["cameras"], config["proprio_dim"]) == ("bins", 1, ["primary"], 0)


def test_bins_head_predicts_chunks_autoregressively(tokenizer, tiny_vla):
    vla = random_vla(tokenizer, chunk_len=3)
    chunk = vla.predict_chunks([images(1)[0]], ["pick up the cup"])
    assert chunk.shape == (1, 3, 7) and vla.chunk_len == 3
    first = vla.predict_action(images(1)[0], "pick up the cup")
    np.testing.assert_array_equal(first, chunk[0, 0])
    # OpenVLA (the reference checkpoint): chunks of one, equal to predict_actions
    batch = [images(1, seed)[0].resize((224, 224)) for seed in (1, 2)]
    chunks = tiny_vla.predict_chunks(batch, ["open it", "close the drawer"], unnorm_key="bridge_orig")
    assert chunks.shape == (2, 1, 7) and (tiny_vla.chunk_len, tiny_vla.cameras, tiny_vla.proprio_dim) == (1, ("primary",), 0)
    np.testing.assert_array_equal(chunks[:, 0], tiny_vla.predict_actions(batch, ["open it", "close the drawer"], unnorm_key="bridge_orig"))


def test_wrong_inputs_get_clear_errors(tokenizer, tiny_checkpoint):
    from prismatic.models.load import CheckpointError, load_vla

    vla = random_vla(tokenizer, **OFT_STYLE)
    state = np.zeros((1, 8))
    with pytest.raises(EncodingError, match=r"images\[0\] has 1 camera image\(s\) but the model reads 2: \['primary', 'wrist'\]"):
        vla.predict_chunks([images(1)], ["x"], proprio=state)
    with pytest.raises(EncodingError, match="reads a 8-D proprioceptive state: pass `proprio`"):
        vla.predict_chunks([images(2)], ["x"])
    with pytest.raises(ValueError, match="proprio has 7 values per sample, the model reads 8"):
        vla.predict_chunks([images(2)], ["x"], proprio=np.zeros((1, 7)))
    with pytest.raises(ValueError, match="one pass; use predict_chunk"):
        vla.model.generate_action_tokens(torch.tensor([[1, 2]]), torch.zeros(1, 12, 112, 112))
    with pytest.raises(EncodingError, match=r"expected a chunk of 4 action\(s\)"):
        vla.encoder.training_sample("x", np.zeros((3, 7)), images(2), state[0])
    # a head without weights in the checkpoint: named, with the way out
    with pytest.raises(CheckpointError, match=r"no weights for the model's action_head.*new_action_modules=True"):
        load_vla(tiny_checkpoint, action_head="l1-regression", action_dim=7)
    fresh = load_vla(tiny_checkpoint, action_head="l1-regression", action_dim=7, chunk_len=2, new_action_modules=True)
    assert fresh.chunk_len == 2 and fresh.model.action_head.model.fc2.out_features == 7
