"""Write and read the hardware export: packed weights, their index, the layer description.

    <dir>/weights.bin     every weight tensor's codes, bit-packed at its own width, one after another
    <dir>/index.json      per tensor: offset and length in weights.bin, shape, layout, bits, per-channel scales;
                          and the file's size and sha256
    <dir>/network.json    the layer description (``snn.deploy.fold``): wiring, shapes, folded
                          integer parameters, neurons, time bins

Reading needs numpy and json only. A missing, truncated or altered file is refused with
an error naming it; nothing is half-written (each file goes to a temporary name first).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snn.deploy.packing import pack_codes, packed_size, unpack_codes

WEIGHTS, INDEX, NETWORK = "weights.bin", "index.json", "network.json"
INDEX_FORMAT = "snn-flow-weights/1"


class ExportError(ValueError):
    """An export folder is incomplete or corrupt; the message names the file."""


@dataclass
class Export:
    description: dict[str, Any]
    weights: dict[str, np.ndarray]  # integer codes, in the layout the description gives
    index: dict[str, Any]

    @property
    def payload_bytes(self) -> int:
        return int(self.index["size"])


def _weights(description: dict[str, Any]) -> list[dict[str, Any]]:
    """Every weight tensor the description uses: each layer's, and a context path's."""
    layers = description.get("layers", [])
    context = [layer["context"]["weight"] for layer in layers if "context" in layer]
    return [layer["weight"] for layer in layers] + context


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_export(
    description: dict[str, Any], tensors: dict[str, tuple[np.ndarray, int]], out_dir: str | Path
) -> Export:
    """Pack ``tensors`` ({name: (codes, bits)}) into ``out_dir`` beside the description."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = bytearray()
    entries = {}
    for name, (codes, bits) in tensors.items():
        data = pack_codes(codes, bits)
        entries[name] = {"offset": len(blob), "bytes": len(data), "shape": list(codes.shape), "bits": int(bits)}
        blob += data
    described = {weight["tensor"]: weight for weight in _weights(description)}
    for name, entry in entries.items():
        entry["layout"] = described.get(name, {}).get("layout", "OIHW")
        entry["scales"] = described.get(name, {}).get("scales")  # value = code x scale of its output channel
    index = {
        "format": INDEX_FORMAT,
        "file": WEIGHTS,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "tensors": entries,
    }
    _write_atomic(out / WEIGHTS, bytes(blob))
    _write_atomic(out / NETWORK, (json.dumps(description, indent=1) + "\n").encode())
    _write_atomic(out / INDEX, (json.dumps(index, indent=1) + "\n").encode())
    return Export(description, {k: np.asarray(c, dtype=np.int64) for k, (c, _) in tensors.items()}, index)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"{path}: not found (is this an export folder of tools/export.py?)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ExportError(f"{path}: not an export file (top level is not an object)")
    return doc


def load_export(out_dir: str | Path) -> Export:
    """Read an export back, checking the weights file's size and hash and every tensor's extent."""
    out = Path(out_dir)
    index = _read_json(out / INDEX)
    description = _read_json(out / NETWORK)
    if index.get("format") != INDEX_FORMAT:
        raise ExportError(f"{out / INDEX}: format {index.get('format')!r}, expected {INDEX_FORMAT!r}")
    path = out / WEIGHTS
    if not path.is_file():
        raise ExportError(f"{path}: not found")
    blob = path.read_bytes()
    if len(blob) != index.get("size"):
        raise ExportError(f"{path}: {len(blob)} bytes, the index says {index.get('size')} (truncated or replaced?)")
    if hashlib.sha256(blob).hexdigest() != index.get("sha256"):
        raise ExportError(f"{path}: its sha256 differs from the index's (the file was altered)")
    weights = {}
    for name, entry in index.get("tensors", {}).items():
        try:
            count = int(np.prod(entry["shape"]))
            start, length = int(entry["offset"]), int(entry["bytes"])
            if length != packed_size(count, int(entry["bits"])) or start < 0 or start + length > len(blob):
                raise ValueError(f"extent {start}+{length} does not fit {count} codes of {entry['bits']} bits")
            codes = unpack_codes(blob[start : start + length], int(entry["bits"]), count)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{out / INDEX}: tensor {name!r}: {exc}") from None
        weights[name] = codes.reshape(entry["shape"])
    missing = [weight["tensor"] for weight in _weights(description) if weight["tensor"] not in weights]
    if missing:
        raise ExportError(f"{out / INDEX}: no weights for {', '.join(missing)} that {out / NETWORK} uses")
    return Export(description, weights, index)
