"""The package layering: lower packages never reach up into training."""

import ast
from pathlib import Path

import pytest

SNN = Path(__file__).resolve().parents[1] / "snn"
LOWER = ("models", "quantization", "data", "utils", "evaluation", "deploy")

# The layers, lowest first: a module imports only from its own package or from lower layers.
# The longest matching prefix decides a module's layer.
LAYERS = {
    "snn.utils.distributed": 0,
    "snn.utils.runtime": 1,
    "snn.quantization": 2,
    "snn.models": 3,
    "snn.data": 3,
    "snn.config": 4,
    "snn.data.loaders": 5,  # assembles datasets from a config
    "snn.evaluation": 6,
    "snn.deploy": 6,
    "snn.training": 7,
    "snn.benchmarks": 8,  # times the trainer's step
    "snn.cli": 8,
    "snn.utils.quantization_utils": 8,  # the QAT guide's one import, re-exporting from below
    "snn": 9,  # snn/__init__.py
}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_do_not_import_training(package):
    files = sorted((SNN / package).rglob("*.py"))
    assert files
    offenders = {
        str(f.relative_to(SNN.parent)): sorted(m for m in _imported_modules(f) if m.startswith("snn.training"))
        for f in files
    }
    assert not {f: m for f, m in offenders.items() if m}


def _layer(module: str) -> tuple[int, str]:
    """(layer, the prefix that gave it)."""
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix], prefix


def _module_name(path: Path) -> str:
    parts = path.relative_to(SNN.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_imports_only_its_own_package_or_lower_layers():
    files = sorted(SNN.rglob("*.py"))
    assert {"snn.config", "snn.cli", "snn.benchmarks.measures"} <= {_module_name(f) for f in files}
    upward = []
    for f in files:
        own, own_prefix = _layer(_module_name(f))
        for imported in sorted(m for m in _imported_modules(f) if m == "snn" or m.startswith("snn.")):
            layer, prefix = _layer(imported)
            if prefix != own_prefix and layer >= own:
                upward.append(f"{_module_name(f)} (layer {own}) imports {imported} (layer {layer})")
    assert not upward


def test_the_layer_check_sees_an_upward_import():
    assert _layer("snn.data.provider") < _layer("snn.config") < _layer("snn.data.loaders")
    assert _layer("snn.utils.quantization_utils")[0] > _layer("snn.deploy.fold")[0] > _layer("snn.utils.runtime")[0]


def test_the_check_sees_an_import_of_training(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from snn.training.run import build_trainer\n")
    assert "snn.training.run" in _imported_modules(probe)


@pytest.mark.parametrize("module", ["reference.py", "packing.py", "export.py"])
def test_the_integer_reference_and_the_export_reader_need_numpy_only(module):
    """A hardware engineer runs these without torch."""
    imported = _imported_modules(SNN / "deploy" / module)
    assert not {m for m in imported if m.split(".")[0] == "torch"}
    assert {m for m in imported if m.startswith("snn.")} <= {"snn.deploy.packing"}
