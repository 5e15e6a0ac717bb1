"""The decoded-regions cache of the feature readers (`features.cache_mb`)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from vlfw.config.loader import load_config
from vlfw.datasets.readers import NpyFeatureReader, RegionCache
from vlfw.errors import ConfigError


def write_npy(directory, stem, rows=3, value=0.0):
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"{stem}.npy", np.full((rows, 8), value, dtype=np.float32))
    info = {"bbox": np.array([[0, 0, 10, 10]] * rows, dtype=np.float32), "num_boxes": rows,
            "image_width": 100, "image_height": 80}
    np.save(directory / f"{stem}_info.npy", info, allow_pickle=True)


def test_a_cached_read_is_the_same_data_and_not_the_cache_itself(tmp_path):
    write_npy(tmp_path, "img1", value=1.5)
    reader = NpyFeatureReader(str(tmp_path), dataset="toy", cache_mb=1)
    first = reader.read("1", stem="img1")
    (tmp_path / "img1.npy").unlink()  # a second read can only come from the cache
    (tmp_path / "img1_info.npy").unlink()
    second = reader.read("1", stem="img1")
    assert second.keys() == first.keys()
    for name in first:
        assert torch.equal(first[name], second[name])
    second["region_features"].zero_()  # a mapper editing its sample in place
    first["region_boxes"].zero_()
    third = reader.read("1", stem="img1")
    assert third["region_features"].eq(1.5).all() and third["region_boxes"][0, 2] == 10


def test_the_cache_stays_within_its_budget_and_forgets_the_oldest():
    entry = {"region_features": torch.zeros(256, dtype=torch.float32)}  # 1 KiB
    cache = RegionCache(budget_mb=3 / 1024)  # three entries
    for key in range(5):
        cache.put(key, entry)
        assert cache.bytes <= cache.budget
    assert list(cache.entries) == [2, 3, 4]
    cache.get(2)  # now the most recently used
    cache.put(5, entry)
    assert list(cache.entries) == [4, 2, 5]


def test_no_budget_no_cache_and_a_pickled_reader_starts_empty(tmp_path):
    write_npy(tmp_path, "img1")
    off = NpyFeatureReader(str(tmp_path), dataset="toy")  # cache_mb 0
    off.read("1", stem="img1")
    assert not off.cache.entries
    on = NpyFeatureReader(str(tmp_path), dataset="toy", cache_mb=1)
    on.read("1", stem="img1")
    copy = pickle.loads(pickle.dumps(on))  # as a spawned DataLoader worker gets it
    assert len(on.cache.entries) == 1 and not copy.cache.entries and copy.cache.budget == on.cache.budget


def test_a_bad_record_is_not_cached(tmp_path):
    write_npy(tmp_path, "img1")
    np.save(tmp_path / "img1.npy", np.zeros((2, 8), dtype=np.float32))  # 2 rows, 3 boxes
    reader = NpyFeatureReader(str(tmp_path), dataset="toy", cache_mb=1)
    for _ in range(2):
        with pytest.raises(Exception, match="num_boxes is 3"):
            reader.read("1", stem="img1")
    assert not reader.cache.entries


def test_cache_mb_is_checked():
    with pytest.raises(ConfigError, match="cache_mb"):
        load_config(["model=late_fusion", "datasets=[vqa2]", "dataset_config.vqa2.features.cache_mb=-1"])
