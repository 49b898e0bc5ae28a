"""Bit-packing of signed integer weight codes at their real width (numpy only).

A b-bit code is stored as b bits, least significant bit first, codes one after the
other with no padding between them; only the last byte of a tensor may hold unused
(zero) bits. So 8 one-bit codes fill a byte, 4 two-bit codes, 2 four-bit codes.

- 1 bit: the codes are -1 and +1, stored as 0 and 1;
- 2..8 bits: two's complement in b bits (ternary codes -1, 0, 1 at 2 bits).
"""

from __future__ import annotations

import numpy as np

MIN_BITS, MAX_BITS = 1, 8


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take."""
    return (count * bits + 7) // 8


def code_range(bits: int) -> tuple[int, int]:
    """The smallest and largest code a width can hold."""
    _check_bits(bits)
    return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Flattened (C order) signed codes -> packed bytes; a code the width cannot hold is an error."""
    lo, hi = code_range(bits)
    flat = np.asarray(codes).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"codes range over [{flat.min()}, {flat.max()}], which {bits} bits cannot hold ([{lo}, {hi}])")
    if bits == 1:
        if np.any(flat == 0):
            raise ValueError("a 1-bit code must be -1 or +1, got 0")
        unsigned = (flat > 0).astype(np.uint8)
    else:
        unsigned = (flat & ((1 << bits) - 1)).astype(np.uint8)
    planes = (unsigned[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """Packed bytes -> ``count`` signed codes (int64); the bytes must be exactly ``packed_size`` long."""
    _check_bits(bits)
    if len(data) != packed_size(count, bits):
        raise ValueError(f"{count} codes of {bits} bits take {packed_size(count, bits)} bytes, got {len(data)}")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    unsigned = (stream.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
    if bits == 1:
        return np.where(unsigned > 0, 1, -1).astype(np.int64)
    return np.where(unsigned >= 1 << (bits - 1), unsigned - (1 << bits), unsigned)


def _check_bits(bits: int) -> None:
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"packed codes need {MIN_BITS}..{MAX_BITS} bits, got {bits}")
