"""The Prismatic VLM with every LLM family (tiny sizes): forward, loss on labels only, generation,
and the splice of image patches after BOS for right- and left-padded batches."""

from __future__ import annotations

import pytest
import torch
from tolerances import rounding_rtol

from prismatic.constants import IGNORE_INDEX
from prismatic.models.configuration import OpenVLAConfig, PrismaticConfig
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.modeling import PrismaticForConditionalGeneration, _splice
from prismatic.models.vision.backbones import VISION_BACKBONES


def tiny_config(llm_id: str, vision_id: str = "dinosiglip-vit-so-224px", cls=PrismaticConfig, **kw):
    llm = LLM_BACKBONES.get(llm_id)
    text = llm.text_config(tiny=True, vocab_size=512, pad_token_id=0).to_dict()
    vision = VISION_BACKBONES.get(vision_id)
    return cls(
        vision_backbone_id=vision_id, llm_backbone_id=llm_id, text_config=text, pad_token_id=0,
        timm_model_kwargs=vision.tiny_kwargs(), arch_specifier="no-align+gelu-mlp", **kw,
    )  # fmt: skip


@pytest.mark.parametrize("llm_id", ["llama2-7b-pure", "mistral-v0.1-7b-pure", "phi-2-3b", "qwen2.5-0.5b-pure"])
def test_forward_loss_and_generate_every_family(llm_id):
    torch.manual_seed(0)
    model = PrismaticForConditionalGeneration(tiny_config(llm_id, "siglip-vit-so400m")).eval()
    ids = torch.randint(3, 500, (2, 9))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -3:] = ids[:, -3:]
    pixels = torch.randn(2, 3, 224, 224)
    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    assert out.logits.shape == (2, 9 + model.num_patches, 512)
    # the loss is the cross-entropy of the 3 labelled tokens only (shifted by one, patches ignored)
    logits = out.logits[:, model.num_patches + 5 : model.num_patches + 8]
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, 512), ids[:, -3:].reshape(-1))
    # the same per-token terms (positive: no cancellation), reduced over all positions vs over the labelled ones
    torch.testing.assert_close(out.loss, manual, rtol=rounding_rtol(out.logits.shape[:2].numel()), atol=0)
    gen = model.generate(input_ids=ids[:1], pixel_values=pixels[:1], max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 12)


def test_splice_inserts_after_first_real_token():
    text = torch.arange(1, 6).view(1, 5, 1).float().repeat(2, 1, 1)  # [B, 5, 1]
    patches = torch.full((2, 2, 1), -1.0)
    out = _splice(text, patches, torch.tensor([1, 3]))[..., 0]
    assert out[0].tolist() == [1, -1, -1, 2, 3, 4, 5]
    assert out[1].tolist() == [1, 2, 3, -1, -1, 4, 5]


def test_left_padding_gives_the_same_logits_as_no_padding():
    torch.manual_seed(0)
    model = PrismaticForConditionalGeneration(tiny_config("llama2-7b-pure", "dinov2-vit-l")).eval()
    ids = torch.randint(3, 500, (1, 6))
    ids[0, 0] = 1
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values=pixels).logits[0, -1]
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
        mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
        got = model(input_ids=padded, attention_mask=mask, pixel_values=pixels).logits[0, -1]
    # Masked positions add exact zeros; what changes is the order of the sums over the longer sequence and in
    # kernels blocked for other shapes: each vision block, projector layer, decoder layer and the head.
    seq = padded.shape[1] + model.num_patches
    depth = len(model.vision_backbone.featurizer.blocks) + 3 + model.config.text_config.num_hidden_layers + 1
    torch.testing.assert_close(got, ref, rtol=0, atol=rounding_rtol(seq, depth) * ref.abs().max().item())


def test_config_validation_names_the_field():
    with pytest.raises(KeyError, match="vision_backbone_id"):
        OpenVLAConfig(vision_backbone_id="resnet-50")
    with pytest.raises(ValueError, match="image_resize_strategy='squash'"):
        OpenVLAConfig(image_resize_strategy="squash")
    with pytest.raises(KeyError, match="arch_specifier.*fused-gelu-mlp"):
        OpenVLAConfig(arch_specifier="no-align+transformer")


def test_mismatched_batch_raises():
    model = PrismaticForConditionalGeneration(tiny_config("llama2-7b-pure", "dinov2-vit-l")).eval()
    with pytest.raises(ValueError, match="2 images but the text batch has 1"):
        model(input_ids=torch.tensor([[1, 5, 6]]), pixel_values=torch.randn(2, 3, 224, 224))


def test_label_only_logits_equal_full_forward_loss():
    torch.manual_seed(0)
    model = PrismaticForConditionalGeneration(tiny_config("llama2-7b-pure", "dinov2-vit-l")).eval()
    ids = torch.randint(3, 500, (2, 10))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, -4:], labels[1, -3:] = ids[0, -4:], ids[1, -3:]
    pixels = torch.randn(2, 3, 224, 224)
    full = model(input_ids=ids, pixel_values=pixels, labels=labels)
    sparse = model(input_ids=ids, pixel_values=pixels, labels=labels, return_label_logits=True)
    # The same decoder; the head runs on 7 rows instead of all (sums of `hidden` products, maybe blocked
    # otherwise), and the mean runs over 7 positive terms instead of every position.
    hidden = model.config.text_config.hidden_size
    torch.testing.assert_close(sparse.loss, full.loss, rtol=rounding_rtol(max(hidden, full.logits.shape[:2].numel()), 2), atol=0)
    assert sparse.logits.shape == (7, 512) and sparse.label_targets.tolist() == ids[0, -4:].tolist() + ids[1, -3:].tolist()
    # rows are the full logits at the positions just before each labelled token
    p = model.num_patches
    row = full.logits[0, p + 5]
    torch.testing.assert_close(sparse.logits[0], row, rtol=0, atol=rounding_rtol(hidden) * row.abs().max().item())
