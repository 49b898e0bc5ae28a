import pytest

from tests.deploy.lively import lively_model

# The five ladder steps, and the end of a progressive run (8 -> 4 -> 2 bits by a schedule).
WIDTHS = [(8, 8, False), (4, 4, False), (2, 4, False), (1, 4, False), (1, 1, False), (2, 2, True)]


@pytest.fixture(params=WIDTHS, ids=[("progressive W" if p else "W") + f"{w}A{a}" for w, a, p in WIDTHS])
def lively(request):
    weights, currents, progressive = request.param
    return lively_model(weights, currents, progressive=progressive)
