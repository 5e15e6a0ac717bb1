"""The region feature normalisation: fitted on train samples, cached, carried by the model."""

import numpy as np
import pytest
import torch

from vlfw.data.batch import Sample, collate
from vlfw.datasets import feature_stats
from vlfw.datasets.feature_stats import accumulate, fitted_statistics, sample_positions
from vlfw.registry import DATASETS, MODELS
from vlfw.testing import task_info


def shapes_vqa(root_config=None, **features):
    config = {"source": "shapes", "shapes": {"size": "tiny", "seed": 0}, "visual": "regions",
              "features": {"format": "npy", **features}}
    return DATASETS.get("vqa2")(config, "vqa2")


def test_positions_are_even_and_deterministic():
    assert sample_positions(5, 10) == [0, 1, 2, 3, 4]
    assert sample_positions(100, 4) == [0, 25, 50, 75]


def test_accumulate_counts_only_real_regions():
    a = Sample(region_features=torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    padded = Sample(region_features=torch.tensor([[[5.0, 2.0], [99.0, 99.0]]]), region_mask=torch.tensor([[True, False]]))
    mean, std, rows = accumulate([a, padded])
    assert rows == 3
    np.testing.assert_allclose(mean, [3.0, 10.0 / 3])
    np.testing.assert_allclose(std, np.array([[1, 2], [3, 6], [5, 2]], dtype=float).std(axis=0))
    constant = accumulate([Sample(region_features=torch.ones(3, 2))])[1]
    assert constant.tolist() == [1.0, 1.0]  # no variance: left unscaled


@pytest.fixture
def stats_cache(tmp_path, monkeypatch):
    """A fresh statistics cache (the Shapes world stays in the suite's cache)."""
    monkeypatch.setattr(feature_stats, "cache_dir", lambda: str(tmp_path))
    return tmp_path


def test_fitted_on_train_samples_and_cached(shapes_tiny_root, stats_cache, monkeypatch):
    builder = shapes_vqa(normalize_samples=7)
    info = builder.task_info()
    dataset = builder.build("train")
    positions = sample_positions(len(dataset), 7)
    rows = np.concatenate([dataset[i]["region_features"].numpy() for i in positions]).astype(np.float64)
    np.testing.assert_allclose(info.region_feature_mean, rows.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(info.region_feature_std, rows.std(axis=0), rtol=1e-7, atol=1e-9)
    assert len(info.region_feature_mean) == info.region_feature_size

    again = shapes_vqa(normalize_samples=7)  # same files and settings: read from the cache, nothing built
    monkeypatch.setattr(type(again), "build", lambda self, split: pytest.fail("refitted despite the cache"))
    assert again.task_info().region_feature_mean == info.region_feature_mean
    other = shapes_vqa(normalize_samples=9)  # other settings: another cache entry
    with pytest.raises(pytest.fail.Exception):
        other.task_info()


def test_a_damaged_cache_file_is_refitted(shapes_tiny_root, stats_cache):
    builder = shapes_vqa(normalize_samples=5)
    first = fitted_statistics(builder, 5)
    (cached,) = (stats_cache / "feature_stats").iterdir()
    cached.write_text("{ not json")
    assert feature_stats.load_cached(str(cached)) is None
    assert fitted_statistics(shapes_vqa(normalize_samples=5), 5) == first


def test_normalize_false_and_images_carry_no_statistics(shapes_tiny_root):
    assert shapes_vqa(normalize=False).task_info().region_feature_mean is None
    images = DATASETS.get("vqa2")({"source": "shapes", "shapes": {"size": "tiny", "seed": 0}}, "vqa2")
    assert images.task_info().region_feature_mean is None


def region_batch(features):
    n = features.shape[1]
    samples = [Sample(index=i, input_ids=torch.tensor([101, 7, 8, 102]), region_features=f,
                      region_boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]).repeat(n, 1), image_size=torch.tensor([32.0, 32.0]),
                      targets=torch.rand(5)) for i, f in enumerate(features)]
    return collate(samples, "vqa2")


@pytest.mark.parametrize("name", ["late_fusion", "attention_fusion"])
def test_the_model_applies_and_carries_the_statistics(name):
    torch.manual_seed(0)
    mean, std = tuple(float(v) for v in torch.rand(6) + 3), tuple(float(v) for v in torch.rand(6) + 0.5)
    config = {"hidden_size": 16, "text_layers": 1, "text_heads": 2, "vocab_size": 200, "dropout": 0.0}
    fields = {"task": "vqa", "num_answers": 5, "region_feature_size": 6, "visual": "regions"}
    model = MODELS.get(name)(config, {"vqa2": task_info(dataset="vqa2", region_feature_mean=mean,
                                                        region_feature_std=std, **fields)}).eval()
    plain = MODELS.get(name)(config, {"vqa2": task_info(dataset="vqa2", **fields)}).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "region_norm" not in k})
    raw = torch.rand(2, 3, 6) * 4
    normalised = (raw - torch.tensor(mean)) / torch.tensor(std)
    with torch.no_grad():
        torch.testing.assert_close(model(region_batch(raw))["logits"], plain(region_batch(normalised))["logits"])
        assert not torch.allclose(model(region_batch(raw))["logits"], plain(region_batch(raw))["logits"])
    # the statistics are buffers of the state dict: a model built from other statistics (or none)
    # applies the checkpoint's once it is loaded
    state = model.state_dict()
    assert {"region_norm.vqa2_mean", "region_norm.vqa2_std"} <= set(state)
    refitted = MODELS.get(name)(config, {"vqa2": task_info(dataset="vqa2", region_feature_mean=(0.0,) * 6,
                                                           region_feature_std=(1.0,) * 6, **fields)}).eval()
    refitted.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(refitted(region_batch(raw))["logits"], model(region_batch(raw))["logits"])
