"""caption_baseline: incremental decoding, a training step, generation through the shared search."""

import pytest
import torch
from omegaconf import OmegaConf

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError
from vlfw.losses.standard import CaptionCrossEntropy
from vlfw.models.captioning import CaptionBaseline
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo, TextInfo

VOCAB, PAD, BOS, EOS = 40, 0, 1, 2
TEXT = TextInfo(vocab_size=VOCAB, pad_id=PAD, cls_id=BOS, sep_id=EOS)
CONFIG = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "cnn_channels": [8, 16], "max_length": 16}


def build(visual="images", **overrides):
    model_class = CaptionBaseline
    info = TaskInfo(task="captioning", dataset="captions", visual=visual, text=TEXT,
                    region_feature_size=12 if visual == "regions" else None)
    return model_class(OmegaConf.merge(model_class.DEFAULT_CONFIG, CONFIG, overrides), {"captions": info})


def caption(length, generator):
    words = torch.randint(3, VOCAB, (length,), generator=generator)
    return torch.cat([torch.tensor([BOS]), words, torch.tensor([EOS])])


def samples_of(visual, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i, length in enumerate(lengths):
        sample = Sample(index=i, input_ids=caption(length, generator))
        if visual == "images":
            sample.image = torch.randn(3, 32, 32, generator=generator)
        else:
            regions = 3 + i % 2
            sample.region_features = torch.randn(regions, 12, generator=generator)
            sample.region_boxes = torch.tensor([[0.0, 0.0, 10.0, 12.0]]).repeat(regions, 1) + i
            sample.image_size = torch.tensor([32.0, 32.0])
        samples.append(sample)
    return samples


def batch_of(visual, lengths, seed=0):
    return collate(samples_of(visual, lengths, seed), "captions")


def test_registered_for_captioning():
    assert MODELS.get("caption_baseline") is CaptionBaseline
    assert CaptionBaseline.supported_tasks() == {"captioning"}


@pytest.mark.parametrize("visual", ["images", "regions"])
def test_cached_incremental_decoding_matches_the_whole_prefix(visual):
    torch.manual_seed(0)
    model = build(visual).eval()
    batch = batch_of(visual, [6, 6, 6])
    with torch.no_grad():
        full = model(batch)["caption_logits"]
        context = model.generation_context(batch)
        cache = None
        for t in range(batch.input_ids.shape[1]):
            step, cache = model.generation_step(batch.input_ids[:, t:t + 1], context, cache)
            assert step.shape == (3, VOCAB)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("visual", ["images", "regions"])
def test_padding_does_not_change_the_real_positions(visual):
    torch.manual_seed(0)
    model = build(visual).eval()
    samples = samples_of(visual, [2, 7, 4])
    batch = collate(samples, "captions")
    assert not batch.attention_mask.all()
    if visual == "regions":
        assert not batch.region_mask.all()
    with torch.no_grad():
        together = model(batch)["caption_logits"]
        for i, sample in enumerate(samples):
            alone = model(collate([sample], "captions"))["caption_logits"][0]
            torch.testing.assert_close(together[i, : len(alone)], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("visual", ["images", "regions"])
def test_a_training_step_lowers_the_loss_and_reaches_every_parameter(visual):
    torch.manual_seed(0)
    model = build(visual, dropout=0.0).train()
    batch = batch_of(visual, [5, 3, 6, 4])
    loss_fn = CaptionCrossEntropy()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = loss_fn(batch, model(batch))
    before.backward()
    # only the encoder the dataset needs exists, so DDP sees no unused parameters
    assert hasattr(model, "image_encoder") == (visual == "images")
    assert hasattr(model, "region_encoder") == (visual == "regions")
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    optimizer.step()
    optimizer.zero_grad()
    for _ in range(4):
        loss_fn(batch, model(batch)).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = loss_fn(batch, model(batch))
    assert before > 3.0  # about log(40) for an untrained model
    assert after < before - 0.5


@pytest.mark.parametrize("visual", ["images", "regions"])
def test_generate_greedy_is_the_argmax_of_the_teacher_forced_logits(visual):
    torch.manual_seed(0)
    model = build(visual).eval()
    batch = batch_of(visual, [4, 4, 4, 4])
    ids = model.generate(batch, max_length=8, num_beams=1)
    assert ids.shape[0] == 4 and ids.shape[1] <= 9 and (ids[:, 0] == BOS).all()
    with torch.no_grad():
        for i in range(4):
            tokens = ids[i].tolist()
            end = tokens.index(EOS) + 1 if EOS in tokens else len(tokens)
            prefix = torch.tensor([tokens[:end]])
            one = batch.select([i])
            one["input_ids"], one["attention_mask"] = prefix, torch.ones_like(prefix, dtype=torch.bool)
            logits = model(one)["caption_logits"][0]
            logits[0, EOS] = float("-inf")  # min_length 1
            assert logits[:-1].argmax(-1).tolist() == tokens[1:end]
            assert all(t == PAD for t in tokens[end:])


@pytest.mark.parametrize("visual", ["images", "regions"])
def test_generate_beam_search_runs_and_ends_rows_with_eos_or_max_length(visual):
    torch.manual_seed(0)
    model = build(visual).eval()
    batch = batch_of(visual, [4, 4, 4])
    ids = model.generate(batch, max_length=6, num_beams=4, length_penalty=1.0)
    assert ids.dtype == torch.long and ids.shape[0] == 3 and ids.shape[1] <= 7 and (ids[:, 0] == BOS).all()
    for tokens in ids.tolist():
        if EOS in tokens:
            assert all(t == PAD for t in tokens[tokens.index(EOS) + 1:])
        else:
            assert len(tokens) == 7
    # each row is what the row gets alone
    alone = [model.generate(batch.select([i]), max_length=6, num_beams=4)[0].tolist() for i in range(3)]
    assert [r[: len(a)] for r, a in zip(ids.tolist(), alone)] == alone


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="max_length"):
        build().eval()(batch_of("images", [20]))
    with pytest.raises(ConfigError, match="region_feature_size"):
        info = TaskInfo(task="captioning", dataset="c", visual="regions", text=TEXT)
        CaptionBaseline(OmegaConf.merge(CaptionBaseline.DEFAULT_CONFIG, CONFIG), {"c": info})
    with pytest.raises(ConfigError, match="text"):
        info = TaskInfo(task="captioning", dataset="c", visual="images")
        CaptionBaseline(OmegaConf.merge(CaptionBaseline.DEFAULT_CONFIG, CONFIG), {"c": info})
