"""The layout (docs/architecture.md): no import cycles in `bench` and `vae_core`, every module in a declared
layer, no import from a lower layer to a higher one (nothing in vae_core imports bench, executors never
import the runner, models never import commands), no file over 350 lines. Each check is also run on a small
package written here with the defect planted, so a check that cannot fail is caught."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests import layout

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "vae_core")


def test_the_packages_have_no_import_cycle():
    found = layout.cycles(layout.graph(REPO, PACKAGES))
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in layout.modules(REPO, PACKAGES) if layout.layer_of(m) is None]
    assert not unplaced, f"modules in no layer of tests/layout.py LAYERS: {unplaced}"


def test_no_layer_imports_a_higher_one():
    found = layout.upward_imports(layout.graph(REPO, PACKAGES))
    assert not found, "imports that go up a layer:\n" + "\n".join(found)


def test_the_named_rules_hold():
    edges = layout.graph(REPO, PACKAGES)
    into = {(a, b) for a, targets in edges.items() for b in targets}
    assert not [(a, b) for a, b in into if a.startswith("vae_core") and b.startswith("bench")]
    assert not [(a, b) for a, b in into if a.startswith("bench.executors") and b == "bench.runner"]
    assert not [(a, b) for a, b in into if a.startswith(("vae_core", "bench.training")) and
                b.startswith(("bench.commands", "bench.cli"))]
    assert ("bench.runner", "bench.executors.local") in into  # the rules read real edges


def test_files_stay_small():
    assert not layout.long_files(REPO, PACKAGES), layout.long_files(REPO, PACKAGES)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_planted_cycle_is_found_also_through_a_lazy_and_a_relative_import(tmp_path):
    root = write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import f\n",
                            "pkg/b.py": "def f():\n    from . import c\n", "pkg/c.py": "import pkg.a\n",
                            "pkg/d.py": "from pkg import a\n"})
    edges = layout.graph(root, ("pkg",))
    assert edges["pkg.b"] == {"pkg.c"} and edges["pkg.d"] == {"pkg.a"}
    assert layout.cycles(edges) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (root / "pkg/c.py").write_text("import os\n")
    assert layout.cycles(layout.graph(root, ("pkg",))) == []


def test_a_planted_upward_import_and_a_long_file_are_found(tmp_path):
    root = write(tmp_path, {"pkg/__init__.py": "", "pkg/low.py": "from pkg.high import x\n",
                            "pkg/high.py": "x = 1\n" * 351})
    layers = (("low", ("pkg.low",)), ("high", ("pkg.high", "pkg")))
    assert layout.upward_imports(layout.graph(root, ("pkg",)), layers) == ["pkg.low (low) imports pkg.high (high)"]
    assert layout.long_files(root, ("pkg",)) == ["pkg/high.py: 351 lines"]
