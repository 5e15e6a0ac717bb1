import pytest

from vlmo_helpers import make_model


@pytest.fixture
def model():
    return make_model()
