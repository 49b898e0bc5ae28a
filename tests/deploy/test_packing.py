"""Bit-packing round trips at every width, including tensors that do not fill their last byte."""

import numpy as np
import pytest

from snn.deploy.packing import code_range, pack_codes, packed_size, unpack_codes


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 13, 64, 1001])
def test_round_trip_at_every_width_and_size(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    lo, hi = code_range(bits)
    codes = rng.choice([-1, 1], size=count) if bits == 1 else rng.integers(lo, hi + 1, size=count)
    data = pack_codes(codes, bits)
    assert len(data) == packed_size(count, bits) == -(-count * bits // 8)
    assert np.array_equal(unpack_codes(data, bits, count), codes)


def test_widths_fill_bytes_as_promised():
    assert len(pack_codes(np.ones(8), 1)) == 1
    assert len(pack_codes(np.ones(8), 2)) == 2
    assert len(pack_codes(np.ones(8), 4)) == 4
    assert len(pack_codes(np.ones(8), 8)) == 8
    # 2-bit: -1, 0, 1, 1 -> 0b11, 0b00, 0b01, 0b01 (least significant first) = 0b01010011
    assert pack_codes(np.array([-1, 0, 1, 1]), 2) == bytes([0b01010011])


def test_codes_a_width_cannot_hold_and_wrong_lengths_are_errors():
    with pytest.raises(ValueError, match="cannot hold"):
        pack_codes(np.array([2]), 2)
    with pytest.raises(ValueError, match="must be -1 or \\+1"):
        pack_codes(np.array([0, 1]), 1)
    with pytest.raises(ValueError, match="take 2 bytes, got 1"):
        unpack_codes(b"\x00", 4, 3)
    with pytest.raises(ValueError, match="1..8 bits"):
        pack_codes(np.array([1]), 9)
