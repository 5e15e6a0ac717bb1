"""The wrapped backbones: with every gate 0 the fused pass is torchvision's Swin and transformers' BertModel
exactly (same weights); a non-zero gate changes both; the two sides update in parallel from each other's
previous-layer state."""

import pytest
import torch
from fiber_helpers import make_batch, make_model, set_gates
from torchvision.models.swin_transformer import SwinTransformer
from transformers import BertConfig, BertModel

from vlfw_fiber.image_backbone import FusedSwinBlock


def reference_swin(model) -> SwinTransformer:
    """A plain torchvision SwinTransformer holding the model's image weights (fused blocks unwrapped)."""
    s = model.sizes
    swin = SwinTransformer(patch_size=[s["patch_size"]] * 2, embed_dim=s["embed_dim"], depths=s["depths"],
                           num_heads=s["image_heads"], window_size=[s["window_size"]] * 2, stochastic_depth_prob=0.0,
                           num_classes=1).eval()
    state = {}
    for name, value in model.encoder.image.state_dict().items():
        if ".fusion_" in name:
            continue
        parts = name.split(".")
        if parts[0] == "patch_embedding":
            parts[0] = "features.0"
        elif parts[0] == "stages":
            parts[:2] = [f"features.{2 * int(parts[1]) + 1}"]
            if parts[2] == "block":
                del parts[2]
        elif parts[0] == "merges":
            parts[:2] = [f"features.{2 * int(parts[1]) + 2}"]
        state[".".join(parts)] = value
    missing, unexpected = swin.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"head.weight", "head.bias"}, (missing, unexpected)
    return swin


def reference_bert(model) -> BertModel:
    s = model.sizes
    config = BertConfig(vocab_size=30522, hidden_size=s["text_hidden"], num_hidden_layers=s["text_layers"],
                        num_attention_heads=s["text_heads"], intermediate_size=s["text_ffn"], max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    bert = BertModel(config, add_pooling_layer=False).eval()
    state = {}
    for name, value in model.encoder.text.state_dict().items():
        if ".fusion_" in name:
            continue
        if name.startswith("layers."):
            index, rest = name[len("layers."):].split(".layer.", 1)
            name = f"encoder.layer.{index}.{rest}"
        state[name] = value
    missing, unexpected = bert.load_state_dict(state, strict=False)
    assert not unexpected and not [m for m in missing if "position_ids" not in m and "token_type_ids" not in m]
    return bert


def fused_pass(model, batch):
    with torch.no_grad():
        return model.encode_pair(batch.image, batch.input_ids, batch.attention_mask)


def test_tiny_model_fuses_across_the_stage_boundary(model):
    image, text = model.encoder.image, model.encoder.text
    fused = [j for j in range(image.num_blocks) if isinstance(image.block(j), FusedSwinBlock)]
    assert fused == [3, 4, 5] and [image.blocks[j] for j in fused] == [(2, 1), (3, 0), (3, 1)]
    assert [layer.fused for layer in text.layers] == [False, True, True, True]
    # text layer L-K+k cross-attends to image tokens of the width of its paired block N-K+k
    assert [layer.image_dim for layer in text.layers[1:]] == [64, 128, 128]


def test_gates_zero_fused_image_path_is_torchvision_swin(model):
    batch = make_batch("vqa2")
    swin = reference_swin(model)
    with torch.no_grad():
        expected = swin.norm(swin.features(batch.image))
        logits = swin(batch.image)
        model_head = swin.head(swin.flatten(swin.avgpool(swin.permute(fused_pass(model, batch).image))))
    got = fused_pass(model, batch)
    assert torch.allclose(got.image, expected, atol=1e-6, rtol=0)
    assert torch.allclose(model_head, logits, atol=1e-6, rtol=0)
    assert torch.allclose(model.encoder.encode_image(batch.image).image, expected, atol=1e-6, rtol=0)


def test_gates_zero_fused_text_path_is_bert(model):
    batch = make_batch("vqa2")
    bert = reference_bert(model)
    with torch.no_grad():
        expected = bert(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    real = batch.attention_mask.bool()
    got = fused_pass(model, batch).text
    assert torch.allclose(got[real], expected[real], atol=1e-6, rtol=0)
    dual = model.encoder.encode_text(batch.input_ids, model.text_mask(batch.input_ids, batch.attention_mask))
    assert torch.allclose(dual[real], expected[real], atol=1e-6, rtol=0)


def test_a_nonzero_gate_changes_both_sides_but_not_the_dual_encoder(model):
    batch = make_batch("vqa2")
    before = fused_pass(model, batch)
    for family in ("encoder.image", "encoder.text"):
        changed = make_model()
        with torch.no_grad():
            gates = [p for n, p in changed.named_parameters() if n.startswith(family) and n.endswith("fusion_gate")]
            gates[-1].fill_(0.5)  # the top layer of one side only
        after = fused_pass(changed, batch)
        image_changed = not torch.allclose(after.image, before.image, atol=1e-4)
        text_changed = not torch.allclose(after.text, before.text, atol=1e-4)
        # the top layers update in parallel: the top image gate reaches only the image, the top text gate the text
        assert (image_changed, text_changed) == ((True, False) if family == "encoder.image" else (False, True))
    set_gates(model, 0.5)
    fused = fused_pass(model, batch)
    assert not torch.allclose(fused.image, before.image, atol=1e-4)
    assert not torch.allclose(fused.text, before.text, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(model.encoder.encode_image(batch.image).image, before.image, atol=1e-6, rtol=0)


def _outputs(model, batch, hooks):
    """Run the fused pass with forward hooks {module: hook}; returns the outputs of every fused module."""
    image, text = model.encoder.image, model.encoder.text
    modules = {f"image{j}": image.block(j) for j in range(image.num_blocks) if image.is_fused(j)}
    modules.update({f"text{i}": layer for i, layer in enumerate(text.layers) if layer.fused})
    seen, handles = {}, []
    for name, module in modules.items():
        def record(_, __, output, name=name):
            output = hooks[name](output) if name in hooks else output
            seen[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()
            return output
        handles.append(module.register_forward_hook(record))
    try:
        fused_pass(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("side", ["image", "text"])
def test_each_side_reads_the_others_previous_layer_state(model, side):
    """Perturbing the output of one side's first fused layer must not reach the other side's paired
    (same-step) layer, only the layer after it: both sides updated from the states before the step."""
    set_gates(model, 1.0)
    batch = make_batch("vqa2")
    clean = _outputs(model, batch, {})
    first = {"image": "image3", "text": "text1"}[side]
    noise = lambda x: x + torch.randn(x.shape, generator=torch.Generator().manual_seed(2))  # not a constant: LNs remove those
    bump = noise if side == "image" else (lambda out: (noise(out[0]), out[1]))
    perturbed = _outputs(model, batch, {first: bump})
    other = "text" if side == "image" else "image"
    paired, after = ("text1", "text2") if other == "text" else ("image3", "image4")
    assert torch.equal(perturbed[paired], clean[paired])
    assert not torch.allclose(perturbed[after], clean[after], atol=1e-3)


def test_no_fusion_layers_is_two_unimodal_backbones():
    model = make_model(tasks=["vqa2", "coco_retrieval"], fusion_layers=0)
    assert not [n for n, _ in model.named_parameters() if "fusion_" in n]
    batch = make_batch("vqa2")
    fused = fused_pass(model, batch)
    with torch.no_grad():
        assert torch.equal(fused.image, model.encoder.encode_image(batch.image).image)


def test_fusion_gate_init_sets_every_gate_and_the_default_is_zero(model):
    gates = {n: p for n, p in model.named_parameters() if n.endswith("fusion_gate")}
    assert len(gates) == 6 and all(float(p.detach()) == 0.0 for p in gates.values())
    opened = make_model(fusion_gate_init=0.5)
    opened_gates = [p for n, p in opened.named_parameters() if n.endswith("fusion_gate")]
    assert len(opened_gates) == 6 and all(float(p.detach()) == 0.5 for p in opened_gates)
    batch = make_batch("vqa2")
    assert not torch.allclose(fused_pass(opened, batch).text, fused_pass(model, batch).text, atol=1e-4)
