"""Webdataset shard sources: writing and reading round trip, the rank x worker split, the shuffle,
bad members, resume positions (vlfw.datasets.shards, vlfw.data.streaming)."""

import io
import json
import os
import tarfile
from collections import Counter

import pytest
import torch
from PIL import Image

from vlfw.cli.prepare import main as prepare
from vlfw.data.streaming import StreamingDatasetStream
from vlfw.datasets.records import BadRecordError
from vlfw.datasets.shards import expand_shards, write_shards
from vlfw.errors import ConfigError, DataError
from vlfw.registry import DATASETS


def _png(number: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (number * 7 % 256, 40, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_shards(folder, sizes, corrupt=(), no_caption=()):
    """Shards of `sizes[i]` samples each, keyed 000000, 000001, ... across the shards."""
    samples, number = [], 0
    for size in sizes:
        for _ in range(size):
            sample = {"__key__": f"{number:06d}", "png": b"not an image" if number in corrupt else _png(number),
                      "json": json.dumps({"width": 12, "height": 10})}
            if number not in no_caption:
                sample["txt"] = f"a blue square number {number}"
            samples.append(sample)
            number += 1
    paths = []
    for shard, size in enumerate(sizes):  # shards of unequal size: one write_shards call per shard
        start = sum(sizes[:shard])
        written = write_shards(samples[start:start + size], str(folder / f"part{shard:03d}"), size)
        paths.append(written[0][0])
    return paths


def shard_builder(spec, **overrides):
    config = {"shards": spec, "shard_shuffle_buffer": 0,
              "processors": {"image": {"params": {"size": 16}}, "masking": {"params": {"probability": 0.0}}}}
    config.update(overrides)
    return DATASETS.get("image_text_shards")(config, "image_text_shards")


def epoch_ids(builder, micro_batch=1, num_replicas=1, rank=0, num_workers=0, seed=0, epochs=1):
    stream = StreamingDatasetStream("image_text_shards", builder.build("train"), builder.collate, micro_batch,
                                    num_replicas, rank, seed, num_workers)
    return [i for _ in range(epochs * stream.batches_per_epoch) for i in stream.next()["id"]]


# -- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("visual", ["images", "regions"])
def test_shapes_shards_give_the_map_style_samples(tmp_path, shapes_tiny_root, visual, capsys):
    assert prepare(["shards", "--source", "shapes", "--out", str(tmp_path), "--samples-per-shard", "4"]) == 0
    assert "train:" in capsys.readouterr().out
    from vlfw.datasets.cc3m import CC3MBuilder

    base = {"source": "shapes", "visual": visual, "features": {"format": "npy"},  # masking on (p=0.15)
            "processors": {"image": {"params": {"size": 32}}}}
    map_style = CC3MBuilder(base, "cc3m")
    sharded = CC3MBuilder({**base, "shards": str(tmp_path / "train"), "shard_shuffle_buffer": 0}, "cc3m")
    expected = map_style.build("train")
    stream = StreamingDatasetStream("cc3m", sharded.build("train"), sharded.collate, 1)
    assert len(stream.dataset) == len(expected) > 8
    assert stream.batches_per_epoch == len(expected)  # one stream, batches of one: every sample once
    for index in range(len(expected)):
        want, got = expected[index], stream.next()
        assert got["index"] == [index] and got["id"] == [want["id"]]
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got[key][0], value), key
            else:
                assert got[key] == [value], key
    assert sharded.task_info() == map_style.task_info()  # feature size, classes, normalisation statistics
    # a val split from shards is a map-style dataset of the same records
    sharded_val = CC3MBuilder({**base, "shards": {"val": str(tmp_path / "val")}}, "cc3m").build("val")
    map_val = map_style.build("val")
    assert len(sharded_val) == len(map_val)
    assert all(torch.equal(sharded_val[i]["input_ids"], map_val[i]["input_ids"]) for i in range(len(map_val)))


# -- the split over ranks and workers -----------------------------------------------------------


@pytest.mark.parametrize("num_replicas, num_workers", [(1, 2), (2, 2), (2, 0)])
def test_ranks_and_workers_see_every_sample_once(tmp_path, num_replicas, num_workers):
    make_shards(tmp_path, [3] * 8)
    spec = str(tmp_path / "part{000..007}" / "00000.tar")
    seen = []
    for rank in range(num_replicas):
        builder = shard_builder(spec, shard_shuffle_buffer=4)
        seen += epoch_ids(builder, micro_batch=3, num_replicas=num_replicas, rank=rank, num_workers=num_workers)
    assert sorted(seen) == list(range(24))


def test_uneven_shards_repeat_the_short_streams_samples(tmp_path):
    make_shards(tmp_path, [3] * 7)  # 2 workers: shards 0,2,4,6 (12 samples) and 1,3,5 (9)
    ids = epoch_ids(shard_builder(str(tmp_path / "part{000..006}" / "00000.tar")), micro_batch=3, num_workers=2)
    counts = Counter(ids)
    # the short stream starts its shards over: shard 1's samples (3, 4, 5) come twice
    assert len(ids) == 24 and set(counts) == set(range(21))
    assert {i for i, n in counts.items() if n == 2} == {3, 4, 5}
    # the loader takes the workers' batches in turn: worker 0 (shard 0) first, then worker 1 (shard 1)
    assert ids[:6] == [0, 1, 2, 3, 4, 5]


def test_too_many_streams_for_the_shards_is_a_config_error(tmp_path):
    make_shards(tmp_path, [3, 3])
    with pytest.raises(ConfigError, match="2 shard.* cannot feed 2 rank.* x 2 loader worker"):
        epoch_ids(shard_builder(str(tmp_path / "part{000..001}" / "00000.tar")), num_replicas=2, num_workers=2)


def test_shuffle_is_seeded_by_seed_and_epoch(tmp_path):
    make_shards(tmp_path, [6] * 4)
    spec = str(tmp_path / "part{000..003}" / "00000.tar")
    first = epoch_ids(shard_builder(spec, shard_shuffle_buffer=5), seed=3, epochs=2)
    again = epoch_ids(shard_builder(spec, shard_shuffle_buffer=5), seed=3, epochs=2)
    other_seed = epoch_ids(shard_builder(spec, shard_shuffle_buffer=5), seed=4)
    assert first == again
    assert sorted(first[:24]) == sorted(first[24:]) == list(range(24))
    assert first[:24] != first[24:] and first[:24] != other_seed and first[:24] != list(range(24))


# -- bad members and bad shards -------------------------------------------------------------------


def test_corrupt_image_and_missing_caption_are_counted_and_skipped(tmp_path):
    make_shards(tmp_path, [4, 4], corrupt={2}, no_caption={5})
    spec = str(tmp_path / "part{000..001}" / "00000.tar")
    builder = shard_builder(spec, skip_bad_records=True)
    dataset = builder.build("train")
    assert len(dataset) == 7  # sample 5 (no .txt) dropped when the headers are scanned
    assert dataset.bad_record_report()["build"] == {"record: no .txt member": 1}
    ids = epoch_ids(builder)  # one stream of 7: the undecodable sample 2 is skipped, the stream starts over for the 7th
    assert ids == [0, 1, 3, 4, 6, 7, 0]
    assert dataset.bad_record_report()["load"] == {"image": 1}


def test_bad_members_are_errors_when_skipping_is_off(tmp_path):
    make_shards(tmp_path / "a", [4], no_caption={1})
    with pytest.raises(BadRecordError, match=r"00000\.tar: bad record at sample 000001: no \.txt member"):
        shard_builder(str(tmp_path / "a" / "part000")).build("train")
    make_shards(tmp_path / "b", [4], corrupt={3})
    with pytest.raises(BadRecordError, match=r"00000\.tar: bad image at sample 000003 \(000003\.png\): corrupt"):
        epoch_ids(shard_builder(str(tmp_path / "b" / "part000")))


def test_truncated_shard_is_counted_or_an_error(tmp_path):
    path = make_shards(tmp_path, [5])[0]
    data = open(path, "rb").read()
    with tarfile.open(path) as archive:
        member = next(m for m in archive.getmembers() if m.name == "000003.png")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: member.offset_data + 10])  # inside sample 3's image
    with pytest.raises(BadRecordError, match="truncated tar shard"):
        shard_builder(str(cut)).build("train")
    builder = shard_builder(str(cut), skip_bad_records=True)
    assert epoch_ids(builder) == [0, 1, 2]  # sample 3 lost its image (and 4 is gone)
    assert sum(builder.build("train").bad_record_report()["build"].values()) == 1  # the truncation (sample 3 and after)


def test_the_header_scan_is_cached_with_its_bad_records(tmp_path):
    from vlfw.cache import cache_dir

    make_shards(tmp_path, [4], no_caption={2})
    spec = str(tmp_path / "part000")
    first = shard_builder(spec, skip_bad_records=True).build("train")
    cached = os.listdir(os.path.join(cache_dir(), "shard_index"))
    second = shard_builder(spec, skip_bad_records=True).build("train")
    assert os.listdir(os.path.join(cache_dir(), "shard_index")) == cached
    assert first.index == second.index and len(second) == 3
    assert second.bad_record_report()["build"] == {"record: no .txt member": 1}
    with pytest.raises(BadRecordError, match="sample 000002: no .txt member"):  # replayed from the cache
        shard_builder(spec).build("train")


def test_shard_that_cannot_be_opened_is_one_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"missing\.tar: shard not found"):
        shard_builder(str(tmp_path / "missing.tar")).build("train")
    (tmp_path / "junk.tar").write_bytes(b"\x01" * 4000)
    with pytest.raises(DataError, match=r"junk\.tar: cannot open the shard: not a readable tar archive"):
        shard_builder(str(tmp_path / "junk.tar"), skip_bad_records=True).build("train")
    with pytest.raises(ConfigError, match="pipe: spec"):
        expand_shards("pipe:curl -s http://x/{0..3}.tar", "dataset_config.x.shards")
    with pytest.raises(DataError, match="no shards for split 'val'"):
        shard_builder(str(tmp_path / "junk.tar")).build("val")


# -- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_with_the_samples_an_uninterrupted_run_sees(tmp_path, num_workers):
    make_shards(tmp_path, [5, 4, 6, 5], corrupt={7})
    spec = str(tmp_path / "part{000..003}" / "00000.tar")

    def stream():
        builder = shard_builder(spec, shard_shuffle_buffer=4, skip_bad_records=True,
                                processors={"image": {"params": {"size": 16}}})  # masking on (p=0.15)
        return StreamingDatasetStream("image_text_shards", builder.build("train"), builder.collate, 2,
                                      seed=1, num_workers=num_workers)

    straight = stream()
    per_epoch = straight.batches_per_epoch
    expected = [straight.next() for _ in range(per_epoch + 3)]
    for cut in (3, per_epoch + 1):  # mid-epoch (the workers' shares differ by one), and in the next epoch
        first = stream()
        for _ in range(cut):
            first.next()
        state = first.state_dict()
        resumed = stream()  # a fresh builder and loader, as after SIGKILL
        resumed.load_state_dict(state)
        for want in expected[cut:]:
            got = resumed.next()
            assert got["id"] == want["id"], cut
            assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["image"], want["image"])
    assert state["positions"][0] and state["consumed"] == 1  # (the last cut) the raw positions are saved


def test_resume_with_other_workers_is_refused(tmp_path):
    make_shards(tmp_path, [4] * 4)
    builder = shard_builder(str(tmp_path / "part{000..003}" / "00000.tar"))
    two = StreamingDatasetStream("s", builder.build("train"), builder.collate, 1, num_workers=2)
    one = StreamingDatasetStream("s", shard_builder(str(tmp_path / "part{000..003}" / "00000.tar")).build("train"),
                                 builder.collate, 1, num_workers=0)
    with pytest.raises(ValueError, match="num_workers=2, this run has 0"):
        one.load_state_dict(two.state_dict())


# -- writing --------------------------------------------------------------------------------------


def test_a_crash_while_writing_leaves_no_half_shard(tmp_path):
    def samples():
        for number in range(5):
            yield {"__key__": f"{number:06d}", "png": _png(number), "txt": "a caption"}
        raise RuntimeError("the source died")

    with pytest.raises(RuntimeError):
        write_shards(samples(), str(tmp_path), 3)
    assert sorted(os.listdir(tmp_path)) == ["00000.tar"]  # the second shard (2 of 3 samples) was never named
    with tarfile.open(tmp_path / "00000.tar") as archive:
        assert sorted(archive.getnames()) == ["000000.png", "000000.txt", "000001.png", "000001.txt",
                                              "000002.png", "000002.txt"]


def test_folder_of_image_caption_pairs(tmp_path, capsys):
    source = tmp_path / "pairs"
    (source / "sub").mkdir(parents=True)
    (source / "b.png").write_bytes(_png(1))
    (source / "b.txt").write_text("a red circle\n")
    (source / "a.jpg").write_bytes(_png(2))  # no caption: left out
    (source / "sub" / "c.png").write_bytes(_png(3))
    (source / "sub" / "c.txt").write_text("two green squares")
    out = tmp_path / "shards"
    assert prepare(["shards", "--source", str(source), "--out", str(out), "--samples-per-shard", "1"]) == 0
    printed = capsys.readouterr().out
    assert "train: 2 samples in 2 shard(s)" in printed and "left out 1 images without a .txt caption" in printed
    records = shard_builder(str(out)).records("train")
    assert [r["caption"] for r in records] == ["a red circle", "two green squares"]
    assert [r["row"] for r in records] == [0, 1]
    assert prepare(["shards", "--source", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
