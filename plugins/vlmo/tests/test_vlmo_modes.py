"""One set of weights, three ways to run it."""

import torch

from vlmo_helpers import make_batch


def perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


def test_retrieval_outputs_are_the_unimodal_passes(model):
    batch = make_batch("coco_retrieval")
    with torch.no_grad():
        out = model(batch)
        text = model.text_embedding(batch.input_ids, batch.attention_mask)
        image = model.image_embedding(batch.image)
    assert torch.allclose(out["text_embeddings"], text, atol=1e-6)
    assert torch.allclose(out["image_embeddings"], image, atol=1e-6)


def test_multi_caption_text_embeddings_match_single(model):
    batch = make_batch("coco_retrieval", batch=4)
    grouped = make_batch("coco_retrieval", batch=2)
    grouped.input_ids = batch.input_ids.view(2, 2, -1)
    grouped.attention_mask = batch.attention_mask.view(2, 2, -1)
    with torch.no_grad():
        flat = model.text_embedding(batch.input_ids, batch.attention_mask)
        out = model(grouped)["text_embeddings"]
    assert out.shape == (2, 2, flat.shape[-1])
    assert torch.allclose(out.reshape(4, -1), flat, atol=1e-6)


def test_vision_expert_does_not_touch_text_only_pass(model):
    batch = make_batch("vqa2")
    with torch.no_grad():
        text = model.encode_text(batch.input_ids)
        image = model.encode_image(batch.image)
        fused = model.pooled_pair(batch.image, batch.input_ids)
        for block in model.transformer.blocks:
            perturb(block.experts["vision"])
        assert torch.equal(model.encode_text(batch.input_ids), text)
        assert not torch.allclose(model.encode_image(batch.image), image)
        assert not torch.allclose(model.pooled_pair(batch.image, batch.input_ids), fused)


def test_vl_expert_only_touches_the_fused_pass(model):
    batch = make_batch("vqa2")
    with torch.no_grad():
        text, image = model.encode_text(batch.input_ids), model.encode_image(batch.image)
        fused = model.pooled_pair(batch.image, batch.input_ids)
        perturb(model.transformer.blocks[-1].experts["vision_language"])
        assert torch.equal(model.encode_text(batch.input_ids), text)
        assert torch.equal(model.encode_image(batch.image), image)
        assert not torch.allclose(model.pooled_pair(batch.image, batch.input_ids), fused)


def test_shared_attention_changes_every_mode(model):
    batch = make_batch("vqa2")
    with torch.no_grad():
        text, image = model.encode_text(batch.input_ids), model.encode_image(batch.image)
        perturb(model.transformer.blocks[0].attention)
        assert not torch.allclose(model.encode_text(batch.input_ids), text)
        assert not torch.allclose(model.encode_image(batch.image), image)


def test_nlvr2_is_two_fused_passes(model):
    batch = make_batch("nlvr2", batch=2)
    second = torch.randn_like(batch.image)
    batch.image = torch.stack([batch.image, second], dim=1)
    with torch.no_grad():
        logits = model(batch)["logits"]
        a = model.pooled_pair(batch.image[:, 0], batch.input_ids, batch.attention_mask)
        b = model.pooled_pair(batch.image[:, 1], batch.input_ids, batch.attention_mask)
        expected = model.heads.heads["nlvr2"].mlp(torch.cat([a, b], dim=-1))
    assert torch.allclose(logits, expected, atol=1e-5)
