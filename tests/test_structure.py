"""The package layering: lower packages never reach up into training."""

import ast
from pathlib import Path

import pytest

SNN = Path(__file__).resolve().parents[1] / "snn"
LOWER = ("models", "quantization", "data", "utils", "evaluation", "deploy")


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
