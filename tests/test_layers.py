"""The layering of ``training/``: core <- geometry <- studies, no import cycle, nothing from the scripts.

Imports are read with :mod:`ast` from the source (module level and inside functions alike), so a
function-level import cannot hide a cycle or an import against the layer order. The checker itself is
tested on small synthetic packages, so that it is known to fail when it should.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"core": 0, "geometry": 1, "studies": 2}
TOP = 3                                     # training/pilot.py, reference_flags.py (the training command) and
                                            # training/importers/ (the checkpoint importers), above every layer
FORBIDDEN_TOP = ("analysis", "experiments", "figures", "matplotlib")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported name, line) for every import in ``path``; ``from pkg import sub`` resolves to ``pkg.sub``
    when ``sub`` is a module of the package, relative imports to their absolute names."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in modules else base, node.lineno))
    return out


def graph(root: Path, package: str = "training") -> tuple[dict[str, list[tuple[str, int]]], dict[str, Path]]:
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules = set(files)
    return {m: imports_of(p, root, modules) for m, p in files.items()}, files


def rank(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None                          # the package itself
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return TOP


def violations(root: Path, package: str = "training") -> list[str]:
    """Every broken rule, one line each: cycles, imports against the layer order, forbidden imports."""
    edges, files = graph(root, package)
    found = []
    internal: dict[str, set[str]] = {m: set() for m in edges}
    for m, imps in edges.items():
        where = files[m].relative_to(root)
        for name, line in imps:
            top = name.split(".")[0]
            if top in FORBIDDEN_TOP:
                found.append(f"{where}:{line}: imports {name} (training/ never imports the scripts or matplotlib)")
            if top != package:
                continue
            target = name if name in edges else name.rpartition(".")[0] if name.rpartition(".")[0] in edges else None
            if target is None or target == m:
                continue
            internal[m].add(target)
            rm, rt = rank(m), rank(target)
            if rm is not None and rt is not None and rt > rm:
                found.append(f"{where}:{line}: {m} imports {target}, a higher layer")
    # cycles: Tarjan's strongly connected components over the internal graph
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(internal[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(internal):
        if v not in index:
            visit(v)
    found += [f"import cycle: {' <-> '.join(c)}" for c in comps]
    return list(dict.fromkeys(found))          # one line per broken rule, in the order found


def test_training_follows_the_layer_order():
    found = violations(ROOT)
    assert not found, "\n".join(found)


def test_importers_sit_above_the_layers():
    """training/importers/ may import core and geometry; no layer imports it."""
    edges, _ = graph(ROOT)
    assert any(m.startswith("training.importers") for m in edges)
    assert rank("training.importers.importer") == TOP
    users = [m for m, imps in edges.items() if not m.startswith("training.importers") and rank(m) != TOP
             and any(n.startswith("training.importers") for n, _ in imps)]
    assert not users, users


def test_every_module_sits_in_a_layer():
    """Only the package's __init__, the training command and its reference-flag translation live outside
    core/, geometry/ and studies/."""
    loose = sorted(p.name for p in (ROOT / "training").glob("*.py"))
    assert loose == ["__init__.py", "pilot.py", "reference_flags.py"]
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / "training" / layer / "__init__.py").read_text()))
        assert doc and len(doc) > 100, f"training/{layer}/__init__.py needs a docstring saying what belongs there"


def _package(tmp_path: Path, sources: dict[str, str]) -> Path:
    for rel, text in sources.items():
        p = tmp_path / "training" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [tmp_path / "training", *[(tmp_path / "training" / rel).parent for rel in sources]]:
        (d / "__init__.py").touch()
    return tmp_path


CLEAN = {"core/a.py": "import os\n", "core/b.py": "from training.core import a\n",
         "geometry/g.py": "from training.core.b import x\n", "studies/s.py": "from ..geometry import g\n",
         "pilot.py": "from training.studies import s\n"}


def test_checker_accepts_a_clean_package(tmp_path):
    assert violations(_package(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("rel, line, expect", [
    ("core/b.py", "def f():\n    from training.geometry import g\n", "a higher layer"),       # function level
    ("geometry/g.py", "from training.studies.s import y\n", "a higher layer"),
    ("core/a.py", "def f():\n    from training.core import b\n", "import cycle"),             # a <-> b
    ("geometry/g.py", "from . import h\n", "import cycle"),                                     # relative, g <-> h
    ("studies/s.py", "import matplotlib.pyplot as plt\n", "matplotlib"),
    ("core/a.py", "from figures import style\n", "figures"),
    ("geometry/g.py", "def f():\n    import analysis.x\n", "analysis"),
])
def test_checker_fails_on_each_violation(tmp_path, rel, line, expect):
    sources = dict(CLEAN)
    sources["geometry/h.py"] = "from training.geometry import g\n"
    sources[rel] = sources.get(rel, "") + line
    found = violations(_package(tmp_path, sources))
    assert any(expect in v for v in found), found
