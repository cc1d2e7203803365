"""Which way the imports point (DESIGN.md), read from the source, lazy imports included."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "featcache"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in the file, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                yield base, alias.name, node.lineno


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in (PACKAGE / folder).rglob("*.py"):
        for module, _, line in imports(path):
            if module.startswith(forbidden):
                found.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    return found


def test_the_walker_sees_lazy_imports() -> None:
    assert len(modules()) > 40
    calls = list(imports(PACKAGE / "extractor" / "pipeline.py"))
    assert ("featcache.extractor.ray_engine", "compute_on_ray", calls[-1][2]) in calls  # lazy


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("data", ("featcache.extractor", "featcache.store", "featcache.classifier")),
        ("store", ("featcache.extractor", "featcache.classifier", "featcache.data")),
        ("classifier", ("featcache.extractor", "featcache.service", "featcache.cli")),
        ("extractor", ("featcache.classifier", "featcache.service", "featcache.cli")),
    ],
)
def test_dependencies_point_one_way(folder: str, forbidden: tuple[str, ...]) -> None:
    assert violations(folder, forbidden) == []


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{path.relative_to(SRC)}:{line} imports {name} from {module}"
        for path in modules()
        for module, name, line in imports(path)
        if name and name.startswith("_") and not name.startswith("__")
    ]
    assert found == []


def test_both_engines_decode_and_write_through_the_shared_stages() -> None:
    for engine in ("local_engine.py", "ray_engine.py"):
        used = {module for module, _, _ in imports(PACKAGE / "extractor" / engine)}
        assert "featcache.extractor.stages" in used, engine
        # Decoding, preprocessing and the network are reached only through the stages.
        assert not used & {
            "featcache.data.decode",
            "featcache.extractor.preprocess",
            "featcache.extractor.alexnet",
            "featcache.extractor.pipeline",
        }, engine


def test_the_layers_above_the_cuts_are_described_once() -> None:
    """featcache.architecture is the one description of the stages above pool2: the
    extractor's graph, the fine-tune's training pass and its NumPy pass all read it, and
    no other module builds a Stage."""
    for user in ("extractor/alexnet.py", "classifier/cuts.py", "classifier/_finetune_tf.py"):
        used = {module for module, _, _ in imports(PACKAGE / user)}
        assert "featcache.architecture" in used, user
    builders = [
        str(path.relative_to(SRC))
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Stage", "Cut")
    ]
    assert set(builders) == {"featcache/architecture.py"}
