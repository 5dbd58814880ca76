"""The package seams DESIGN.md promises, checked on the source: ``refstar`` is a leaf library
(never imports the worker, the jobs or Ray) and Ray enters the worker only through its adapter."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _offenders(package: str, banned: tuple[str, ...], allowed: tuple[str, ...] = ()) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in allowed:
            continue
        bad = sorted(n for n in _imports(path) if n.split(".")[0] in banned)
        if bad:
            found[rel] = bad
    return found


def test_refstar_is_a_leaf_library():
    assert _offenders("refstar", ("worker", "jobs", "ray")) == {}


def test_ray_enters_the_worker_only_through_its_adapter():
    cluster = tuple(str(p.relative_to(ROOT)) for p in (ROOT / "worker" / "cluster").glob("*.py"))
    assert len(cluster) >= 2
    assert _offenders("worker", ("ray",), allowed=cluster) == {}
    # the jobs run the worker, not the other way round (the CLI hands its Ray commands over)
    assert _offenders("worker", ("jobs",), allowed=("worker/cli.py",)) == {}


def test_every_worker_folder_says_what_it_holds():
    for folder in (ROOT / "worker").iterdir():
        if folder.is_dir() and not folder.name.startswith(("_", ".")):
            init = folder / "__init__.py"
            assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), folder.name


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from worker.errors import ModelError\n    import ray.train\n")
    assert _imports(src) == {"worker.errors", "ray.train"}
