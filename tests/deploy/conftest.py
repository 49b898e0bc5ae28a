import pytest

from tests.deploy.lively import lively_model

WIDTHS = [(8, 8), (4, 4), (2, 4), (1, 4), (1, 1)]


@pytest.fixture(params=WIDTHS, ids=[f"W{w}A{a}" for w, a in WIDTHS])
def lively(request):
    return lively_model(*request.param)
