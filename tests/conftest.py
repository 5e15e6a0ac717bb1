"""Suite-wide settings: a private cache directory, so tests never read or write ~/.cache/vlfw."""

import pytest

from vlfw.testing import shapes_root, use_private_cache

use_private_cache()


@pytest.fixture(scope="session")
def shapes_tiny_root() -> str:
    """The tiny Shapes world, generated once per test session into the private cache."""
    return shapes_root("tiny")


@pytest.fixture(scope="session")
def roberta_tokenizer_dir(tmp_path_factory) -> str:
    """A RoBERTa-style byte-level BPE tokenizer directory, trained offline once per session."""
    from vlfw.testing import roberta_style_tokenizer

    return roberta_style_tokenizer(str(tmp_path_factory.mktemp("roberta_tokenizer")))
