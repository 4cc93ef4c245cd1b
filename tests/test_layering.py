"""The package's import layering: every import between its parts points down the layer order, so
there is no upward import and no package cycle (read from the code's imports with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import selfsup

ROOT = Path(selfsup.__file__).parent
#: top to bottom; a part may import only parts in later rows
LAYERS = [
    ["__main__"],
    ["cli"],
    ["__init__"],
    ["app"],
    ["eval"],
    ["train"],
    ["data"],
    ["config"],
    ["methods"],
    ["losses", "nn", "backbones"],
    ["dist", "precision", "registry"],
    ["errors"],
]
LAYER = {part: i for i, row in enumerate(LAYERS) for part in row}


def _part(path: tuple[str, ...]) -> str:
    """The top-level part a module path belongs to (``("eval", "knn")`` -> ``eval``)."""
    return path[0] if path and ((ROOT / path[0]).is_dir() or (ROOT / f"{path[0]}.py").exists()) else "__init__"


def import_edges() -> dict[tuple[str, str], str]:
    """``(importer, imported) -> first place`` for every import between two parts of the package."""
    edges: dict[tuple[str, str], str] = {}
    for file in sorted(ROOT.rglob("*.py")):
        rel = file.relative_to(ROOT).with_suffix("").parts
        package = rel[:-1]
        src = _part(rel) if rel != ("__init__",) else "__init__"
        for node in ast.walk(ast.parse(file.read_text())):
            targets: list[tuple[str, ...]] = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    targets = [(*base, *node.module.split("."))]
                else:
                    targets = [(*base, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "selfsup":
                targets = [tuple(node.module.split(".")[1:])]
            elif isinstance(node, ast.Import):
                targets = [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "selfsup"]
            for target in targets:
                dst = _part(target)
                if dst != src:
                    edges.setdefault((src, dst), f"{'/'.join(rel)}.py:{node.lineno}")
    return edges


def test_every_part_has_a_layer():
    parts = {p.stem if p.suffix == ".py" else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"configs", "__pycache__"}
    assert parts <= set(LAYER), f"add {sorted(parts - set(LAYER))} to LAYERS"


def test_no_upward_import_and_no_cycle():
    upward = [f"{a} -> {b} ({where})" for (a, b), where in import_edges().items() if LAYER[a] >= LAYER[b]]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    import shutil
    import sys

    copy = tmp_path / "selfsup"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "configs"))
    knn = copy / "eval" / "knn.py"
    knn.write_text(knn.read_text() + "\nfrom ..app.runs import load_encoder  # noqa\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", copy)
    edges = import_edges()
    assert ("eval", "train") in edges and edges[("eval", "app")].startswith("eval/knn.py:")
