"""The harness's layers (/work/shared/architecture.md, docs/guide.md): no import circles, and nothing imports upward.

The import graph is read from the source (module-level imports; a function-local import is a lazy,
deliberate late binding and is listed separately where a rule forbids it anyway).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"conformance": "ddspec.conformance", "reference": "ddspec.reference"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGES[parts[0]].split(".")[0], *PACKAGES[parts[0]].split(".")[1:], *parts[1:]])


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    names = [f"{base}.{a.name}" for a in node.names]
    return [base, *names]


def _imports(path: Path, *, lazy: bool) -> set[str]:
    """ddspec modules imported by ``path``: at module level (lazy=False) or inside functions (lazy=True)."""
    module, tree = _module_name(path), ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    top = set(id(n) for n in tree.body)
    in_type_checking = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            in_type_checking |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in in_type_checking:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)) and ((id(node) in top) != lazy):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else _resolve(module, node, is_package)
            found |= {t for t in targets if t.startswith("ddspec.")}
    return found


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    files = [p for d in PACKAGES for p in (ROOT / d).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = {t if t in modules else t.rsplit(".", 1)[0] for t in _imports(path, lazy=lazy)} & set(modules)
        graph[name].discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    out, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                out.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return out


def _not_package_init(a: str, b: str) -> bool:
    # a package's __init__ importing its own submodules is not a layering cycle
    return not (b.startswith(a + ".") or a.startswith(b + "."))


def test_no_import_circles() -> None:
    cycles = [c for c in _cycles(_graph(lazy=False)) if all(_not_package_init(x, y) for x, y in zip(c, c[1:]))]
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one (``ddspec.conformance.clip_tail`` is not under
    ``ddspec.conformance.cli``)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


GROUND = ("ddspec.conformance.protocol", "ddspec.conformance.results", "ddspec.conformance.guard",
          "ddspec.reference.vocabulary")
ABOVE_GROUND = ("ddspec.conformance.runner", "ddspec.conformance.cli", "ddspec.conformance.pytest_plugin",
                "ddspec.conformance.checks", "ddspec.conformance.adapters", "ddspec.conformance.context",
                "ddspec.conformance.sandbox", "ddspec.conformance.diagnosis", "ddspec.conformance.sweep")


@pytest.mark.parametrize("module", GROUND)
def test_ground_floor_imports_nothing_above_it(module: str) -> None:
    both = _graph(lazy=False).get(module, set()) | _graph(lazy=True).get(module, set())
    upward = sorted(m for m in both if _under(m, ABOVE_GROUND))
    assert not upward, f"{module} imports {upward}"


CORE = ("ddspec.conformance.trajectory", "ddspec.conformance.expectation", "ddspec.conformance.judge",
        "ddspec.conformance.tolerances", "ddspec.conformance.stats", "ddspec.conformance.records",
        "ddspec.conformance.transition_stats", "ddspec.conformance.clip_tail")
ABOVE_CORE = ("ddspec.conformance.runner", "ddspec.conformance.cli", "ddspec.conformance.pytest_plugin",
              "ddspec.conformance.checks", "ddspec.conformance.adapters", "ddspec.conformance.sandbox",
              "ddspec.conformance.diagnosis", "ddspec.conformance.sweep", "ddspec.conformance.report",
              "ddspec.conformance.html_report", "ddspec.conformance.loader", "ddspec.conformance.baseline")


@pytest.mark.parametrize("module", CORE)
def test_the_core_drive_expect_judge_imports_no_check_adapter_or_face(module: str) -> None:
    """docs/harness.md: the core (drive → expect → judge) sits below the checks and the drivers' libraries."""
    both = _graph(lazy=False).get(module, set()) | _graph(lazy=True).get(module, set())
    assert module in _graph(lazy=False), f"{module} is not a module of the tree"
    upward = sorted(m for m in both if _under(m, ABOVE_CORE))
    assert not upward, f"{module} imports {upward}"


def test_reference_never_imports_the_harness_or_torch() -> None:
    for path in (ROOT / "reference").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] == "torch" or "conformance" in n]
                assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad}"


def test_checks_never_import_an_adapter_the_runner_or_a_face() -> None:
    faces = ("ddspec.conformance.runner", "ddspec.conformance.cli", "ddspec.conformance.pytest_plugin",
             "ddspec.conformance.adapters", "ddspec.conformance.report", "ddspec.conformance.html_report",
             "ddspec.conformance.loader")
    lazy, eager = _graph(lazy=True), _graph(lazy=False)
    bad = {m: sorted(t for t in lazy.get(m, set()) | eager.get(m, set()) if _under(t, faces))
           for m in eager if m.startswith("ddspec.conformance.checks")}
    bad = {m: v for m, v in bad.items() if v}
    assert not bad, f"check modules import upward: {bad}"


def test_no_check_family_imports_another() -> None:
    """A check family is a short statement over the core (docs/harness.md): what families share lives in the
    core or in the checks' own plumbing (``checks/_common.py``, ``checks/_loop.py``), never in another family."""
    lazy, eager = _graph(lazy=True), _graph(lazy=False)
    families = {m for m in eager if m.startswith("ddspec.conformance.checks.")
                and not m.rsplit(".", 1)[1].startswith("_")}
    assert {"ddspec.conformance.checks.loop", "ddspec.conformance.checks.single_step"} <= families
    bad = {m: sorted((lazy.get(m, set()) | eager.get(m, set())) & families) for m in families}
    bad = {m: v for m, v in bad.items() if v}
    assert not bad, f"check families import other families: {bad}"


def test_the_graph_reader_sees_a_planted_circle(tmp_path: Path) -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _under("ddspec.conformance.checks.loop", ("ddspec.conformance.checks",))
    assert not _under("ddspec.conformance.clip_tail", ("ddspec.conformance.cli",))
    real = _graph(lazy=False)
    assert "ddspec.conformance.guard" in real["ddspec.conformance.context"]
    assert "ddspec.conformance.results" in real["ddspec.conformance.runner"]


def test_every_package_is_installed() -> None:
    """A subpackage missing from pyproject's ``packages`` works in the editable checkout and is absent from a
    real install (it happened to ``ddspec.conformance.diagnosis``): every folder with an ``__init__.py`` under
    the mapped package dirs must be listed."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    missing = []
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *rel.parts])
            if name not in listed:
                missing.append(name)
    assert not missing, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(missing)}"
