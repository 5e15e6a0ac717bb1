"""One set of weights, three ways to run it."""

import torch
from vlmo_helpers import make_batch, make_model


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


def _all_modes(model, batch, cls_only):
    """[CLS] of the image-only, text-only and fused passes, computed fully or with cls_only."""
    if cls_only:
        fused = model._fused(batch.image, batch.input_ids, batch.attention_mask, first=1)
        return (model.encode_image(batch.image, cls_only=True), model.encode_text(batch.input_ids, batch.attention_mask,
                cls_only=True), fused)
    return (model.encode_image(batch.image)[:, :1], model.encode_text(batch.input_ids, batch.attention_mask)[:, :1],
            model.encode_pair(batch.image, batch.input_ids, batch.attention_mask)[0][:, :1])


def test_cls_only_last_layer_equals_slicing_the_full_pass():
    """The [CLS]-only last layer (what pooled heads and ITC use) gives the values and the
    gradients of the full pass sliced at position 0: with padding, with and without VL-FFN."""
    for overrides in ({}, {"vl_ffn_layers": 0}, {"shared_ffn": True}):
        model = make_model(**overrides).train()
        batch = make_batch("vqa2", batch=3, length=9)
        batch.attention_mask[1, 6:] = 0
        batch.input_ids[1, 6:] = 0
        results = []
        for cls_only in (False, True):
            model.zero_grad()
            outputs = _all_modes(model, batch, cls_only)
            assert all(o.shape == (3, 1, model.hidden_size) for o in outputs)
            sum((o * torch.arange(o.shape[-1]).float()).sum() for o in outputs).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results.append(([o.detach() for o in outputs], grads))
        (full, full_grads), (fast, fast_grads) = results
        for a, b in zip(full, fast):
            assert torch.allclose(a, b, atol=1e-5), overrides
        assert full_grads.keys() == fast_grads.keys()
        for name in full_grads:  # float32 sums in another order: gradients up to ~300 differ in the 4th digit
            assert torch.allclose(full_grads[name], fast_grads[name], atol=1e-3, rtol=1e-4), (overrides, name)


def test_tiny_init_makes_cls_depend_on_the_input():
    """At std 0.02 (sized for 768-wide layers) the tiny model's text [T_CLS] embedding is the same
    for every caption (cosine 1 - 1e-6), which stalls ITC from scratch; the tiny default
    (1/sqrt(64)) separates them."""
    batch = make_batch("coco_retrieval", batch=16, length=12)
    similarity = {}
    for std in (0.02, None):
        model = make_model() if std is None else make_model(init_std=std)
        assert model.init_std == (0.125 if std is None else std)
        weight = model.transformer.blocks[0].experts["language"].fc1.weight
        assert abs(float(weight.detach().std()) - model.init_std) < 0.1 * model.init_std
        with torch.no_grad():
            text = model.text_embedding(batch.input_ids, batch.attention_mask)
        similarity[std] = float((text @ text.t())[~torch.eye(16, dtype=torch.bool)].mean())
    assert similarity[0.02] > 0.99999
    assert similarity[None] < 0.999
