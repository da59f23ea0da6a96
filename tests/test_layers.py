"""The house rules, checked: imports follow the layers (lazy top package, torch-free scoring, no
cycles, no CLI in a package ``__init__``, no backend switched at import) and files stay small."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from _imports import SRC, cycles, graph, modules

HEAVY = ("matplotlib", "pandas", "affectlocus.diff", "affectlocus.tuning", "affectlocus.bench",
         "affectlocus.study", "affectlocus.evaluation", "transformers", "peft", "sklearn")


def _loaded(code: str, block: tuple[str, ...] = ()) -> list[str]:
    """Module names loaded by ``code`` in a fresh interpreter (``block``: modules made unimportable)."""
    prog = ("import sys, json\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {list(block)!r}:\n"
            "            raise ImportError(f'{name} is blocked')\n"
            "sys.meta_path.insert(0, Block())\n" + code + "\nprint(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_registry_loads_only_the_core():
    loaded = _loaded("import affectlocus.registry")
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_top_package_is_lazy_and_public_names_resolve():
    loaded = _loaded("import affectlocus")
    assert "torch" not in loaded and [m for m in loaded if m.startswith(HEAVY)] == []
    import affectlocus as al
    for name in al.__all__:
        assert getattr(al, name) is not None, name
    assert callable(al.diff) and al.evaluate.__module__ == "affectlocus.evaluation.runner"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        al.nope


@pytest.mark.parametrize("module", ["affectlocus.unibench", "affectlocus.unibench.cli", "affectlocus.tasks"])
def test_scoring_and_tasks_import_without_torch(module):
    loaded = _loaded(f"import {module}", block=("torch",))
    assert module in loaded


def test_scoring_and_tasks_depend_only_on_the_bottom_layer():
    allowed = ("affectlocus.errors", "affectlocus._io", "affectlocus._version", "affectlocus._cli",
               "affectlocus.unibench", "affectlocus.tasks")
    g = graph()
    bad = {m: sorted(t for t in g[m] if not t.startswith(allowed))
           for m in g if m.startswith(("affectlocus.unibench", "affectlocus.tasks"))}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_package_init_imports_a_cli():
    g = graph()
    bad = {m: sorted(t for t in g[m] if t.rsplit(".", 1)[-1] in ("cli", "_cli"))
           for m, path in modules().items() if path.name == "__init__.py"}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_module_switches_the_matplotlib_backend_at_import():
    offenders = []
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Expr) and "matplotlib.use" in ast.unparse(node) or \
                    isinstance(node, ast.Expr) and "plt.switch_backend" in ast.unparse(node):
                offenders.append(name)
    assert offenders == []


def test_files_stay_under_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_import_checker_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nfrom . import a\nif TYPE_CHECKING:\n"
                              "    from .c import h\n")
    (pkg / "c.py").write_text("from .b import x\n")
    g = graph(tmp_path, "pkg")
    assert g["pkg.a"] == {"pkg.b"} and g["pkg.b"] == {"pkg.a"} and g["pkg.c"] == {"pkg.b"}
    assert cycles(g) == [["pkg.a", "pkg.b"]]
