"""Captioning: the text backbone as a causal decoder over the final image tokens. Incremental decoding with
the KV cache gives the logits of recomputing the whole prefix, and vlfw's greedy / beam search over the
cache equals the same search recomputing every prefix."""

import pytest
import torch
from fiber_helpers import make_batch, make_model, set_gates

from vlfw.generation import generate


class RecomputingDecoder:
    """FIBER's generation interface without a KV cache: the cache is the token prefix itself, and every
    step runs the decoder over the whole prefix (the reference the cached steps must equal)."""

    def __init__(self, model):
        self.model = model
        self.task_infos = model.task_infos

    def parameters(self):
        return self.model.parameters()

    def generation_context(self, batch):
        return self.model.generation_context(batch)

    def generation_step(self, input_ids, context, cache):
        prefix = input_ids if cache is None else torch.cat([cache, input_ids], dim=1)
        memory = [(context[f"keys.{i}"], context[f"values.{i}"]) if f"keys.{i}" in context else None
                  for i in range(self.model.encoder.text.num_layers)]
        length = prefix.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
        logits, _ = self.model.decode(prefix, 0, causal, memory, None)
        return logits[:, -1], prefix


def make_captioner(peaked: bool):
    model = make_model(tasks=["coco_captioning"])
    set_gates(model, 1.0)  # let the image matter
    if peaked:
        with torch.no_grad():  # a peaked vocabulary: distinct hypotheses, not 30,522 near-ties
            model.mlm_head.decoder.weight.mul_(30.0)
    return model


@pytest.fixture
def captioner():
    return make_captioner(peaked=True)


def test_cached_steps_equal_the_whole_prefix():
    captioner = make_captioner(peaked=False)
    batch = make_batch("coco_captioning", pad_last=False)
    with torch.no_grad():
        full = captioner.caption_logits(batch)["caption_logits"]
        context = captioner.generation_context(batch)
        cache, steps = None, []
        for t in range(batch.input_ids.shape[1]):
            logits, cache = captioner.generation_step(batch.input_ids[:, t:t + 1], context, cache)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)
    # the image reaches the logits (through the gated cross-attention of the top layers)
    other = make_batch("coco_captioning", pad_last=False)
    other.image = other.image.flip(0)
    with torch.no_grad():
        assert not torch.allclose(captioner.caption_logits(other)["caption_logits"], full, atol=1e-3)


@pytest.mark.parametrize("beams", [1, 3])
def test_generate_with_the_cache_equals_recomputing(captioner, beams):
    batch = make_batch("coco_captioning", batch=4)
    options = {"max_length": 6, "num_beams": beams, "length_penalty": 1.0, "min_length": 1}
    cached = captioner.generate(batch, **options)
    reference = generate(RecomputingDecoder(captioner), batch, **options)
    assert cached.shape[0] == 4 and torch.equal(cached, reference)
    assert bool((cached[:, 0] == 101).all())
    assert len({tuple(row.tolist()) for row in cached}) > 1  # different images, different captions


def test_captioning_needs_fusion_layers():
    from vlfw.errors import ConfigError

    with pytest.raises(ConfigError, match="fusion_layers"):
        make_model(tasks=["coco_captioning"], fusion_layers=0)
