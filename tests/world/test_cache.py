"""Caching, determinism, atomic generation and the vlfw_prepare command."""

import os

import pytest

import vlfw.world.generate as generate_module
from vlfw.cli.prepare import main as prepare_main
from vlfw.errors import DataError
from vlfw.world import benchmark_paths, ensure_world, read_manifest, world_dir


def test_same_seed_same_bytes(world, tmp_path):
    again = ensure_world("tiny", seed=0, cache_dir=str(tmp_path))
    assert again != world
    first, second = read_manifest(world), read_manifest(again)
    assert first["files"]["annotation_sha256"] == second["files"]["annotation_sha256"]
    with open(f"{world}/features/butd/coco.tsv", "rb") as a, open(f"{again}/features/butd/coco.tsv", "rb") as b:
        assert a.read() == b.read()


def test_other_seed_differs(world, tmp_path):
    other = ensure_world("tiny", seed=1, cache_dir=str(tmp_path))
    assert other.endswith("tiny_seed1")
    a = read_manifest(world)["files"]["annotation_sha256"]
    b = read_manifest(other)["files"]["annotation_sha256"]
    key = "vqa2/v2_OpenEnded_mscoco_train2014_questions.json"
    assert a[key] != b[key]


def test_cached_world_is_reused(world, world_cache):
    stamp = os.path.getmtime(os.path.join(world, "MANIFEST.json"))
    assert ensure_world("tiny", seed=0, cache_dir=world_cache) == world
    assert os.path.getmtime(os.path.join(world, "MANIFEST.json")) == stamp
    assert world == world_dir("tiny", 0, world_cache)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while writing VCR")

    monkeypatch.setattr(generate_module.vcr, "write_vcr", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_world("tiny", seed=5, cache_dir=str(tmp_path))
    final = world_dir("tiny", 5, str(tmp_path))
    assert not os.path.exists(final)
    assert [e for e in os.listdir(os.path.dirname(final)) if not e.endswith(".lock")] == []
    monkeypatch.undo()
    root = ensure_world("tiny", seed=5, cache_dir=str(tmp_path))
    assert root == final and os.path.isfile(f"{root}/vcr/train.jsonl")


def test_leftover_temp_dir_is_ignored_and_cleaned(tmp_path):
    final = world_dir("tiny", 6, str(tmp_path))
    leftover = os.path.join(os.path.dirname(final), f".tmp-{os.path.basename(final)}-99999")
    os.makedirs(os.path.join(leftover, "vqa2"))
    # A directory without a manifest (as a killed rename-less run would leave) is not used either.
    os.makedirs(os.path.join(final, "vqa2"))
    root = ensure_world("tiny", seed=6, cache_dir=str(tmp_path))
    assert os.path.isfile(os.path.join(root, "MANIFEST.json"))
    assert not os.path.exists(leftover)


def test_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="tiny"):
        ensure_world("tinny", cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="vqa2"):
        benchmark_paths(str(tmp_path), "vqa3")


def test_benchmark_paths_image_dirs(world):
    assert benchmark_paths(world, "vqa2")["image_dir"] == os.path.join(world, "coco")
    assert benchmark_paths(world, "refcoco_plus")["data_dir"] == os.path.join(world, "refcoco")
    assert os.path.isdir(os.path.join(benchmark_paths(world, "snli_ve")["image_dir"], "flickr30k-images"))
    assert os.path.isdir(os.path.join(benchmark_paths(world, "vcr")["image_dir"], "vcr1images"))


def test_prepare_command(world_cache, world, capsys):
    assert prepare_main(["shapes", "--size", "tiny", "--seed", "0", "--cache-dir", world_cache]) == 0
    assert world in capsys.readouterr().out
    assert prepare_main(["shapes", "--size", "huge", "--cache-dir", world_cache]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlfw_prepare: error:") and "huge" in err and "\n" not in err


@pytest.mark.parametrize("args, expected", [
    (["--feature-dim", "0"], "--feature-dim must be a positive integer (the region feature size), got 0"),
    (["--feature-dim", "-3"], "--feature-dim must be a positive integer (the region feature size), got -3"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
])
def test_prepare_refuses_impossible_sizes_in_one_line_before_writing(tmp_path, capsys, args, expected):
    cache = tmp_path / "cache"
    assert prepare_main(["shapes", "--size", "tiny", "--cache-dir", str(cache), *args]) == 1
    err = capsys.readouterr().err
    assert err == f"vlfw_prepare: error: {expected}\n"
    assert not cache.exists()


@pytest.mark.parametrize("option, value", [("feature_dim", 0), ("max_boxes", -1), ("image_size", 2.5),
                                           ("questions_per_image", True), ("features", "yes")])
def test_world_options_are_checked_before_anything_is_written(tmp_path, option, value):
    with pytest.raises(DataError) as info:
        ensure_world("tiny", 0, str(tmp_path / "cache"), **{option: value})
    expected = "true or false" if option == "features" else "a positive integer"
    assert str(info.value) == f"Shapes world option {option} must be {expected}, got {value!r}"
    assert not (tmp_path / "cache").exists()


def _tree_bytes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_render_workers_write_the_same_files(tmp_path):
    """Rendering in worker processes (the default on a machine with more than one core) writes
    byte for byte what rendering inline writes: images, features and annotations."""
    inline, parallel = str(tmp_path / "inline"), str(tmp_path / "parallel")
    generate_module.generate_world(inline, "tiny", seed=3, workers=0)
    generate_module.generate_world(parallel, "tiny", seed=3, workers=2)
    a, b = _tree_bytes(inline), _tree_bytes(parallel)
    assert len(a) > 100 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_a_crash_in_a_render_worker_leaves_nothing(tmp_path, monkeypatch):
    import vlfw.world.pools as pools

    def broken(scene):
        raise RuntimeError("simulated crash while rendering")

    monkeypatch.setattr(pools, "render_scene", broken)  # forked workers inherit it
    monkeypatch.setenv("VLFW_WORLD_WORKERS", "2")
    with pytest.raises(RuntimeError, match="simulated crash while rendering"):
        ensure_world("tiny", seed=7, cache_dir=str(tmp_path))
    final = world_dir("tiny", 7, str(tmp_path))
    assert not os.path.exists(final)
    assert [e for e in os.listdir(os.path.dirname(final)) if not e.endswith(".lock")] == []


def test_bad_render_worker_count_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VLFW_WORLD_WORKERS", "many")
    with pytest.raises(DataError, match="VLFW_WORLD_WORKERS must be an integer"):
        generate_module.generate_world(str(tmp_path / "w"), "tiny", seed=0)
    with pytest.raises(DataError, match="render workers must be >= 0"):
        generate_module.generate_world(str(tmp_path / "w"), "tiny", seed=0, workers=-1)
