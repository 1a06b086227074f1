"""Conversation data: the JSON is checked up front (every problem named at once), the stream is a seeded
order per pass that ranks split and that resumes exactly, and text-only rows in a batch behave as if they
had no image at all."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from tolerances import rounding_rtol
from vlm_helpers import IMAGE_SIZE, write_data

from prismatic.constants import IGNORE_INDEX
from prismatic.models.llm.loading import BUNDLED_TOKENIZERS, load_tokenizer
from prismatic.vlm.conversation import ConversationDataError, ConversationEncoder
from prismatic.vlm.data import ConversationDataset, VLMCollator, load_conversations


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"), n=8)


def test_malformed_json_names_the_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "a",\n "conversations": [}]')
    with pytest.raises(ConversationDataError, match=r"bad.json is not valid JSON: .* at line 2, column 20"):
        load_conversations(bad, tmp_path, "conversation")
    bad.write_text('{"id": "a"}')
    with pytest.raises(ConversationDataError, match="holds a dict; expected a non-empty list"):
        load_conversations(bad, tmp_path, "conversation")


def test_every_bad_entry_is_listed_at_once(data, tmp_path):
    entries = json.loads(data["qa"].read_text())
    entries[1]["image"] = "images/missing.png"
    entries[2]["conversations"] = entries[2]["conversations"][:1]  # no answer
    entries[3]["conversations"][0]["from"] = "gpt"
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(ConversationDataError) as e:
        load_conversations(path, data["root"], "conversation")
    msg = str(e.value)
    assert "3 problem(s)" in msg
    assert "entry 1 (id 'qa-1'): image 'images/missing.png' is not a file under --data.image_dir" in msg
    assert "entry 2 (id 'qa-2'): has no assistant ('gpt') turn" in msg
    assert "entry 3 (id 'qa-3'): turn 0 is from 'gpt', expected 'human'" in msg


def test_align_data_must_be_caption_pairs(data):
    with pytest.raises(ConversationDataError, match="has 4 turns; the align stage reads caption pairs"):
        load_conversations(data["qa"], data["root"], "caption")
    assert len(load_conversations(data["captions"], data["root"], "caption")) == 8


@functools.cache
def _llama_tokenizer():
    return load_tokenizer("llama2-7b-pure", BUNDLED_TOKENIZERS / "llama2", 64)


def _dataset(entries, root, rank=0, world_size=1, skip=0):
    from prismatic.models.vision.backbones import VISION_BACKBONES, featurizer_preprocess
    from prismatic.models.vision.transforms import ImageTransform

    tok = _llama_tokenizer()
    transform = ImageTransform(featurizer_preprocess(VISION_BACKBONES.get("siglip-vit-so400m"), "resize-naive", IMAGE_SIZE))
    return ConversationDataset(entries, root, ConversationEncoder(tok, "pure", 64), transform, "conversation",
                               seed=3, rank=rank, world_size=world_size, skip=skip)  # fmt: skip


def test_each_pass_is_a_seeded_permutation_split_over_ranks_and_resumes_exactly(data):
    entries = load_conversations(data["qa"], data["root"], "conversation")  # 8 with images + 4 text-only
    n = len(entries)
    ranks = [_dataset(entries, data["root"], rank=r, world_size=2) for r in range(2)]
    order = [ranks[r].index(k) for k in range(3 * n // 2) for r in range(2)]  # 3 passes, interleaved as ranks read
    for p in range(3):
        assert sorted(order[p * n : (p + 1) * n]) == list(range(n))  # every entry once per pass
    assert order[:n] != order[n : 2 * n]  # a new order each pass
    assert order == [_dataset(entries, data["root"], rank=r, world_size=2).index(k) for k in range(3 * n // 2)
                     for r in range(2)]  # the same seed, the same stream  # fmt: skip
    stream = iter(ranks[0])
    first = [next(stream) for _ in range(5)]
    resumed = iter(_dataset(entries, data["root"], rank=0, world_size=2, skip=3))
    for want, got in zip(first[3:], [next(resumed), next(resumed)]):
        assert torch.equal(want["input_ids"], got["input_ids"]) and torch.equal(want["pixel_values"], got["pixel_values"])


def test_text_only_rows_get_placeholder_pixels_and_an_image_mask(data):
    entries = load_conversations(data["qa"], data["root"], "conversation")
    ds = _dataset(entries, data["root"])
    text_only = next(i for i, e in enumerate(entries) if "image" not in e)
    with_image = next(i for i, e in enumerate(entries) if "image" in e)
    a, b = ds.sample(with_image), ds.sample(text_only)
    assert b["pixel_values"].shape == a["pixel_values"].shape and not b["pixel_values"].any()
    assert a["labels"][0] == IGNORE_INDEX and b["labels"][0] == IGNORE_INDEX  # BOS; the human turn anyway
    batch = ds.collator([a, b])
    assert batch["image_mask"].tolist() == [True, False]
    assert "image_mask" not in ds.collator([a, a])  # all rows with images: the plain multimodal batch
    assert isinstance(ds.collator, VLMCollator)


def test_a_text_only_row_in_a_mixed_batch_equals_that_row_without_an_image():
    """Its placeholder patches are masked out: same loss and answer logits as the text alone, no pixels."""
    from prismatic.models.configuration import PrismaticConfig
    from prismatic.models.llm.backbones import LLM_BACKBONES
    from prismatic.models.modeling import PrismaticForConditionalGeneration
    from prismatic.models.vision.backbones import VISION_BACKBONES

    torch.manual_seed(0)
    config = PrismaticConfig(
        vision_backbone_id="siglip-vit-so400m", llm_backbone_id="llama2-7b-pure", arch_specifier="gelu-mlp",
        text_config=LLM_BACKBONES.get("llama2-7b-pure").text_config(tiny=True, vocab_size=512, pad_token_id=0).to_dict(),
        pad_token_id=0, timm_model_kwargs=VISION_BACKBONES.get("siglip-vit-so400m").tiny_kwargs(), image_sizes=[28],
    )  # fmt: skip
    model = PrismaticForConditionalGeneration(config).eval()
    ids = torch.randint(3, 500, (2, 9))
    ids[:, 0] = 1
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 5:] = ids[:, 5:]
    mask = torch.ones_like(ids, dtype=torch.bool)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        mixed = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, image_mask=torch.tensor([True, False]))
        alone = model(input_ids=ids[1:], attention_mask=mask[1:], labels=labels[1:])
        imaged = model(input_ids=ids[:1], attention_mask=mask[:1], pixel_values=pixels[:1], labels=labels[:1])
    n = model.num_patches
    got = torch.cat([mixed.logits[1, :1], mixed.logits[1, 1 + n :]])  # its text positions: BOS, then after the patches
    want = alone.logits[0]
    # Masked keys add exact zeros; the sums over the longer sequence run in another order (each decoder layer + head).
    depth = config.text_config.num_hidden_layers + 1
    torch.testing.assert_close(got, want, rtol=0, atol=rounding_rtol(ids.shape[1] + n, depth) * want.abs().max().item())
    assert torch.isfinite(mixed.loss)
    torch.testing.assert_close(mixed.logits[0], imaged.logits[0], rtol=0,
                               atol=rounding_rtol(ids.shape[1] + n, depth) * imaged.logits.abs().max().item())  # fmt: skip
