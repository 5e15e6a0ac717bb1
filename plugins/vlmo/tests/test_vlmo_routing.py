"""Which expert sees which token, recorded with forward hooks on the experts."""

import torch
from vlmo_helpers import make_batch


def record_experts(model):
    seen, handles = [], []
    for layer, block in enumerate(model.transformer.blocks):
        for name, expert in block.experts.items():
            def hook(module, inputs, output, layer=layer, name=name):
                seen.append((layer, name, inputs[0].reshape(-1, inputs[0].shape[-1]).shape[0]))
            handles.append(expert.register_forward_hook(hook))
    return seen, handles


def test_fused_pass_routes_by_modality_then_vl_ffn(model):
    batch = make_batch("vqa2", batch=2, length=5)
    patches = 1 + (32 // 8) ** 2
    seen, handles = record_experts(model)
    with torch.no_grad():
        model.encode_pair(batch.image, batch.input_ids, batch.attention_mask)
    for h in handles:
        h.remove()
    switch = model.transformer.vl_start
    assert switch == 3  # tiny: 4 layers, VL-FFN in the top 1
    expected = []
    for layer in range(4):
        if layer < switch:
            expected += [(layer, "language", 2 * 5), (layer, "vision", 2 * patches)]
        else:
            expected += [(layer, "vision_language", 2 * (5 + patches))]
    assert sorted(seen) == sorted(expected)


def test_unimodal_passes_use_their_expert_in_every_layer(model):
    batch = make_batch("vqa2", batch=2, length=5)
    seen, handles = record_experts(model)
    with torch.no_grad():
        model.encode_image(batch.image)
    assert {(layer, name) for layer, name, _ in seen} == {(layer, "vision") for layer in range(4)}
    seen.clear()
    with torch.no_grad():
        model.encode_text(batch.input_ids, batch.attention_mask)
    for h in handles:
        h.remove()
    assert {(layer, name) for layer, name, _ in seen} == {(layer, "language") for layer in range(4)}


def test_text_tokens_are_routed_by_mask_not_position(model):
    """The L-FFN receives exactly the text rows, whatever the text length."""
    block = model.transformer.blocks[0]
    x = torch.randn(2, 9, model.hidden_size)
    is_text = torch.zeros(2, 9, dtype=torch.bool)
    is_text[0, :3] = True
    is_text[1, :6] = True
    captured = {}
    handle = block.experts["language"].register_forward_hook(lambda m, i, o: captured.setdefault("rows", i[0]))
    with torch.no_grad():
        out = block.route(x, is_text, fused=False)
    handle.remove()
    assert torch.equal(captured["rows"], x[is_text])
    assert torch.allclose(out[~is_text], block.experts["vision"](x[~is_text]))


def test_padding_does_not_change_real_tokens(model):
    batch = make_batch("vqa2", batch=2, length=5)
    padded_ids = torch.cat([batch.input_ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([batch.attention_mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        text, image = model.encode_pair(batch.image, batch.input_ids, batch.attention_mask)
        text_p, image_p = model.encode_pair(batch.image, padded_ids, padded_mask)
        alone = model.encode_text(batch.input_ids)
        alone_p = model.encode_text(padded_ids, padded_mask)
    assert torch.allclose(text, text_p[:, :5], atol=1e-5)
    assert torch.allclose(image, image_p, atol=1e-5)
    assert torch.allclose(alone, alone_p[:, :5], atol=1e-5)


def test_ablation_switches(model):
    from vlmo_helpers import make_model

    shared = make_model(shared_ffn=True)
    assert all(list(b.experts) == ["shared"] for b in shared.transformer.blocks)
    none = make_model(vl_ffn_layers=0)
    assert not any("vision_language" in b.experts for b in none.transformer.blocks)
    batch = make_batch("vqa2")
    for m in (shared, none):
        with torch.no_grad():
            assert m(batch)["logits"].shape == (3, 7)
