"""The region features carry what real bottom-up-attention features carry: colour and class."""

from vlfw.world.probe import probe_world


def test_colour_and_shape_are_linearly_readable_from_region_features(world):
    result = probe_world(world, images=40)
    assert result["held_out"] >= 20, result
    # generator version 1 (random CNN only) gave about 43% for shape on `default`
    assert result["shape"] >= 75.0 and result["shape"] > result["shape_majority"] + 40, result
    assert result["colour"] >= 60.0 and result["colour"] > result["colour_majority"] + 35, result
