"""The import graph of medsft, read from the source: acyclic, and the light layers stay light.

Imports inside functions count as edges: deferring an import hides a cycle from Python, not from
the design. `from medsft.data import X` is an edge to the module that defines X (the package
re-exports its layers lazily, see medsft/data/__init__.py).
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "medsft"


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _lazy_exports(path: Path) -> dict[str, str]:
    """Name -> layer of a package that re-exports lazily through an `_EXPORTS` table."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            return {name: layer for layer, names in table.items() for name in names}
    return {}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source."""
    mods = modules(root, package)
    lazy = {m: _lazy_exports(p) for m, p in mods.items() if p.name == "__init__.py"}

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".") if is_package else module.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    layer = lazy.get(base, {}).get(alias.name)
                    targets.append(f"{base}.{layer}" if layer else f"{base}.{alias.name}")
            for target in targets:
                found = resolve(target)
                # A module's own packages are imported before it by Python: no design edge.
                if found and found != module and not module.startswith(found + "."):
                    graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text('_EXPORTS = {"b": ("thing",)}\n')
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from pkg import a\n")
    (pkg / "d.py").write_text("from pkg.sub import thing\nimport pkg.a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.d"] == {"pkg.sub.b", "pkg.a"}  # the lazy name resolves to its layer
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
    (pkg / "sub" / "c.py").write_text("")
    assert cycles(import_graph(tmp_path, "pkg")) == []


def test_medsft_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def loaded_after(*imports: str) -> dict[str, bool]:
    """Whether torch and Lightning are in sys.modules after importing `imports`, in a fresh
    interpreter (this one has them loaded already)."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(imports)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'lightning')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_metrics_and_the_data_readers_import_neither_torch_nor_lightning():
    light = [
        "medsft.metrics",
        "medsft.metrics.text",
        "medsft.metrics.judge",
        "medsft.data",
        "medsft.data.sources",
        "medsft.data.schema",
    ]
    assert loaded_after(*light) == {"torch": False, "lightning": False}


@pytest.mark.parametrize("module", ["medsft.metrics.likelihood", "medsft.data.batching"])
def test_perplexity_and_batching_import_torch_but_not_lightning(module):
    assert loaded_after(module) == {"torch": True, "lightning": False}


def test_perplexity_runs_without_lightning():
    """perplexity() itself (collate included) loads no Lightning, not only its module."""
    code = (
        "import sys\n"
        "from medsft.metrics.likelihood import perplexity\n"
        "from medsft.model.build import load_tokenizer, random_qwen3\n"
        "tok = load_tokenizer('qwen3')\n"
        "conv = [{'role': 'user', 'content': '头痛怎么办'}, {'role': 'assistant', "
        "'content': '多休息。'}]\n"
        "perplexity(random_qwen3('tiny'), tok, [conv])\n"
        "print('lightning' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert out.stdout.splitlines()[-1] == "False"


def test_reading_rows_and_scoring_load_neither_torch_nor_lightning_when_called(tmp_path):
    """Light when called, not only when imported: a local file read through every layer of
    medsft.data's readers, and BLEU and ROUGE scored."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "头痛怎么办", "answer": "多休息。"}\n', encoding="utf-8")
    code = (
        "import json, sys\n"
        "from medsft.data import DataSource, iter_conversations, read_rows\n"
        "from medsft.metrics import bleu, rouge\n"
        f"assert len(list(read_rows({str(rows)!r}))) == 1\n"
        f"(c,) = iter_conversations(DataSource({str(rows)!r}))\n"
        "answers, refs = [c.messages[-1]['content']], ['多喝水，多休息。']\n"
        "print(bleu(answers, refs).score, rouge(answers, refs)['rougeL'].score)\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'lightning')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == {"torch": False, "lightning": False}


LAZY_PACKAGES = ["medsft.data", "medsft.evaluation", "medsft.metrics"]


def test_one_lazy_re_export_helper_serves_every_package():
    import importlib

    getattr_defs = [
        name
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
    ]
    assert getattr_defs == ["medsft"]  # medsft.lazy_exports, and no copy of it
    for name in LAZY_PACKAGES:
        package = importlib.import_module(name)
        exports = _lazy_exports(modules()[name])
        assert exports, name
        for export, layer in exports.items():
            module = importlib.import_module(f"{name}.{layer}")
            assert getattr(package, export) is getattr(module, export), export
            assert export in dir(package)
        with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'nope'"):
            package.nope  # noqa: B018


def test_importing_a_package_imports_none_of_its_lazy_layers():
    code = (
        "import json, sys\n"
        f"import {', '.join(LAZY_PACKAGES)}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('medsft.data.', "
        "'medsft.evaluation.', 'medsft.metrics.likelihood', 'medsft.metrics.judge')))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []


# --------------------------------------------------------------------------------------------
# The layout: what each package may import, as its docstring says
# --------------------------------------------------------------------------------------------

PACKAGES = ("model", "training", "data", "evaluation", "metrics", "cli")
ALIASES = ("medsft.export", "medsft.publish", "medsft.leakage")
"""Top-level modules kept for old commands: they run a medsft.cli tool with runpy."""
KNOWN_TO_CLI = {("medsft", "medsft.cli.console")}
"""Imports of medsft.cli from outside it that remain until medsft/__init__.py loses its
import-time side effect (issue 25, point 5): listed, so that nothing is added to them."""


def owner(module: str) -> str:
    """The package a module belongs to (`data`, `cli`, ...), `top` for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in PACKAGES) else "top"


def allowed_imports(root: Path = ROOT) -> dict[str, set[str] | None]:
    """The packages each package's docstring says it may import (None: any), from its
    `May import: ...` sentence."""
    rules: dict[str, set[str] | None] = {}
    for package in PACKAGES:
        path = root / PACKAGE / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found = re.search(r"May import: (.*?)\.(?:\s|$)", doc, re.DOTALL)
        assert found, f"{path}: the docstring must say what the package may import"
        allowed = found.group(1).split(";")[0]  # what follows says what it never imports
        named = set(re.findall(r"medsft\.(\w+)", allowed)) & set(PACKAGES)
        rules[package] = None if found.group(1).startswith("anything") else named
    return rules


def layout_violations(
    graph: dict[str, set[str]], rules: dict[str, set[str] | None]
) -> set[tuple[str, str]]:
    """(module, import) pairs against the layout: a package importing one its docstring does not
    allow; medsft.cli or an alias imported from outside medsft.cli; a top-level module
    importing a package."""
    bad = set()
    for module, targets in graph.items():
        mine = owner(module)
        for target in targets:
            theirs = owner(target)
            to_cli = target in ALIASES or (theirs == "cli" and mine != "cli")
            from_top = mine == "top" and theirs != "top"
            rule = rules.get(mine)
            across = mine not in ("top", theirs) and theirs != "top" and rule is not None
            if to_cli or from_top or (across and theirs not in rule):
                bad.add((module, target))
    return bad


def test_packages_import_only_what_their_docstrings_allow():
    rules = allowed_imports()
    # The directions themselves: data and metrics never reach training, evaluation or the
    # command line; a model builds without training, data, evaluation or the command line.
    assert not rules["data"] & {"training", "evaluation", "cli"}
    assert not rules["metrics"] & {"training", "evaluation", "cli"}
    assert not rules["model"] & {"training", "data", "evaluation", "cli"}
    assert all(rule is None or "cli" not in rule for rule in rules.values())
    bad = layout_violations(import_graph(), rules)
    assert bad <= KNOWN_TO_CLI, "imports against the layout:\n" + "\n".join(
        f"{a} -> {b}" for a, b in sorted(bad - KNOWN_TO_CLI)
    )


def test_the_layout_check_reads_docstrings_and_imports_inside_functions(tmp_path):
    pkg = tmp_path / PACKAGE
    for package in PACKAGES:
        (pkg / package).mkdir(parents=True)
        rule = "anything." if package == "cli" else "the top level."
        (pkg / package / "__init__.py").write_text(f'"""{package}.\n\nMay import: {rule}"""\n')
    (pkg / "data" / "__init__.py").write_text('"""Data.\n\nMay import: medsft.model."""\n')
    (pkg / "__init__.py").write_text("")
    (pkg / "chat.py").write_text("")
    (pkg / "model" / "build.py").write_text("from medsft import chat\n")
    (pkg / "data" / "stream.py").write_text(
        "from medsft.model import build\n\ndef f():\n    from medsft.training import loop\n"
    )
    (pkg / "training" / "loop.py").write_text("from medsft import chat\n")
    (pkg / "evaluation" / "run.py").write_text("def main():\n    import medsft.cli.errors\n")
    (pkg / "cli" / "errors.py").write_text("import medsft.evaluation.run\n")
    rules = allowed_imports(tmp_path)
    assert rules["data"] == {"model"} and rules["cli"] is None and rules["training"] == set()
    assert layout_violations(import_graph(tmp_path, PACKAGE), rules) == {
        ("medsft.data.stream", "medsft.training.loop"),
        ("medsft.evaluation.run", "medsft.cli.errors"),
    }


def test_the_top_level_holds_few_modules_and_the_aliases_import_nothing():
    top = [m for m in modules() if owner(m) == "top" and m != PACKAGE]
    assert len(top) <= 8, f"{len(top)} top-level modules: {top}; put new ones in a package"
    for alias in ALIASES:
        tree = ast.parse(modules()[alias].read_text(encoding="utf-8"))
        imported = {
            a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
        }
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported == {"runpy"}, alias
