"""Layering of the packages: analyses -> unlearning -> geffect -> torch, read from the source with ``ast``.

(a) the graph of intra-project imports made when a module is imported (top-level statements,
    including those nested in a top-level ``if`` / ``try``, excluding ``if TYPE_CHECKING:``)
    has no cycle;
(b) nothing under ``geffect/`` imports ``unlearning`` or ``analyses``, at any nesting level;
(c) ``analyses/`` uses only the public names of ``geffect`` / ``unlearning``;
(d) every ``python -m`` CLI lists each option of its dataclass, with its help text, in ``--help``;
(e) the top level of ``unlearning/`` holds only ``python -m`` entry points that dispatch to
    ``unlearning.cli`` and deprecation shims (the code lives in subpackages);
(f) every command line is built from a dataclass by the project's one parser helper,
    :func:`geffect.cli.dataclass_parser` (no ``HfArgumentParser`` / ``argparse`` parser of its own).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("geffect", "unlearning", "analyses")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, (path, _) in MODULES.items()}


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module][1]
    base = module if is_pkg else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(absolute target module, imported name or None) for each name of an import statement."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = _base(module, node)
    return [(base, alias.name) for alias in node.names]


def _project_module(name: str) -> str | None:
    """The longest project module that ``name`` is or lies in, or None outside the project."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _module_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported (not inside functions/classes)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)) and not _is_type_checking(node):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    stack.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports at module level.

    ``from pkg import sub`` where ``pkg.sub`` is a module is an edge to ``pkg.sub`` only; other
    names are edges to ``pkg``. Importing ``a.b.c`` also imports ``a`` and ``a.b``, except the
    importing module's own ancestors, which Python has already started to import.
    """
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, tree in TREES.items():
        for node in _module_level_imports(tree):
            for base, name in _imported(module, node):
                target = f"{base}.{name}" if name and f"{base}.{name}" in MODULES else base
                target = _project_module(target)
                if target is None:
                    continue
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in MODULES and dep != module and not module.startswith(dep + "."):
                        graph[module].add(dep)
                if target != module and module.startswith(target + "."):
                    graph[module].add(target)  # a name taken from a package the module lies in
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [m0, m1, ..., m0], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path, iters = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_graph_sees_package_and_relative_imports():
    graph = import_graph()
    assert "unlearning.objectives.base" in graph["unlearning.objectives"]
    assert "geffect.rules.registry" in graph["geffect.rules.linear"]
    assert "unlearning.data.embedded.vocab" in graph["unlearning.data.embedded.names"]  # from . import vocab
    assert "geffect.engine" in graph["unlearning.metrics.likelihood"]


def test_module_level_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_geffect_never_imports_unlearning_or_analyses():
    bad = []
    for module, tree in TREES.items():
        if not module.startswith("geffect"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for base, name in _imported(module, node):
                    target = f"{base}.{name}" if name else base
                    if target.split(".")[0] in ("unlearning", "analyses"):
                        bad.append(f"{MODULES[module][0].relative_to(REPO)}:{node.lineno} imports {target}")
    assert not bad, "geffect must stay independent of unlearning and analyses:\n" + "\n".join(bad)


def _all(module: str) -> set[str] | None:
    """The literal ``__all__`` of a project module, or None when it defines none."""
    for node in TREES[module].body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return set(ast.literal_eval(node.value))
    return None


def private_uses_in_analyses() -> list[str]:
    """``analyses`` imports of geffect / unlearning names that their modules do not export.

    Allowed: ``from M import name`` with ``name`` in the ``__all__`` of M, or ``name`` a
    subpackage of M (``from unlearning import objectives``, whose ``__all__`` is its API).
    """
    bad = []
    for module, tree in TREES.items():
        if not module.startswith("analyses"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for base, name in _imported(module, node):
                if base.split(".")[0] not in ("geffect", "unlearning"):
                    continue
                where = f"{MODULES[module][0].relative_to(REPO)}:{node.lineno}"
                if name is None:
                    if not (base in MODULES and MODULES[base][1]):
                        bad.append(f"{where}: import {base} (import from a package instead)")
                    continue
                sub = f"{base}.{name}"
                if sub in MODULES and MODULES[sub][1]:
                    continue
                exported = _all(base) if base in MODULES else None
                if exported is None or name not in exported:
                    bad.append(f"{where}: from {base} import {name} ({base} does not export it in __all__)")
    return bad


def test_analyses_uses_only_public_names():
    bad = private_uses_in_analyses()
    assert not bad, "analyses imports names geffect/unlearning do not export:\n" + "\n".join(bad)


def test_public_name_check_can_fail():
    """The checker flags what it should, on a scratch module."""
    TREES["analyses._scratch"] = ast.parse("from geffect.tracker import MANIFEST\nimport geffect.engine\n"
                                           "from geffect import answer_nll\nfrom unlearning import objectives\n")
    MODULES["analyses._scratch"] = (REPO / "analyses" / "_scratch.py", False)
    try:
        flagged = [b for b in private_uses_in_analyses() if b.startswith("analyses/_scratch.py")]
    finally:
        del TREES["analyses._scratch"], MODULES["analyses._scratch"]
    assert len(flagged) == 2 and "MANIFEST" in flagged[0] and "import geffect.engine" in flagged[1]


# --------------------------------------------------------------------------- (d) CLIs
CLIS = [
    ("unlearning.cli.evaluate", "EvaluateArguments"),
    ("unlearning.cli.evaluate_muse", "EvaluateMuseArguments"),
    ("unlearning.cli.evaluate_wmdp", "EvaluateWmdpArguments"),
    ("unlearning.cli.attribute", "AttributeArguments"),
    ("unlearning.cli.finetune", "FinetuneArguments"),
    ("unlearning.cli.replay", "ReplayRunArguments"),
    ("unlearning.cli.train", "UnlearningArguments"),
    ("analyses.geffect_tofu", "StudyConfig"),
    ("analyses.geffect_muse", "MuseStudyConfig"),
    ("analyses.geffect_wmdp", "WmdpStudyConfig"),
]


def _squash(text: str) -> str:
    """Text without whitespace: argparse re-wraps help, possibly after a hyphen."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("module_name,dataclass_name", CLIS, ids=[m for m, _ in CLIS])
def test_cli_help_lists_every_option(module_name, dataclass_name, capsys):
    module = importlib.import_module(module_name)
    config = getattr(module, dataclass_name)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    squashed = _squash(out)
    own = set(config.__dataclass_fields__) - {f.name for base in config.__mro__[1:]
                                             if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    checked = 0
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        assert re.search(rf"--{re.escape(f.name)}\b", out), f"{module_name} --help lacks --{f.name}"
        text = f.metadata.get("help")
        if f.name in own:  # the CLI's own options all document themselves
            assert text, f"{dataclass_name}.{f.name} has no metadata help"
        if text:
            assert _squash(text.replace("%%", "%")) in squashed, f"{module_name} --help lacks the help of --{f.name}"
            checked += 1
        if f.name in own and module_name != "unlearning.cli.train" and f.default is not dataclasses.MISSING:
            shown = _squash(f"{text.replace('%%', '%')} (default: {f.default})")
            assert shown in squashed, f"{module_name} --help lacks the default of --{f.name}"
    assert checked >= len(own)


# --------------------------------------------------------------------------- (e) the unlearning top level
def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("__name__ == '__main__'", '__name__ == "__main__"')


def _is_deprecation_warning(node: ast.stmt) -> bool:
    """``warnings.warn(..., DeprecationWarning, ...)`` or the entry points' ``unlearning.cli.warn_moved(...)``."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    func = ast.unparse(node.value.func)
    return func.endswith("warn_moved") or (func in ("warnings.warn", "warn")
                                           and "DeprecationWarning" in ast.unparse(node.value))


def _plain(node: ast.stmt) -> bool:
    """A statement a shim may hold: a docstring, an import, a name bound to an expression, a deprecation warning."""
    docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    return (docstring or isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign))
            or _is_deprecation_warning(node))


def _dispatches_to_cli(tree: ast.Module, body: list[ast.stmt]) -> bool:
    """An entry point's ``__main__`` block: ``main()`` or ``sys.exit(main())`` (imports aside), nothing else,
    with ``main`` imported from an ``unlearning.cli.<name>`` module (in the block or at the top)."""
    calls = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    imported_main = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(
        "unlearning.cli.") and "main" in [a.name for a in n.names]]
    return (len(calls) == 1 and isinstance(calls[0], ast.Expr) and bool(imported_main)
            and ast.unparse(calls[0]) in ("main()", "sys.exit(main())"))


def top_level_violations(trees: dict[str, ast.Module]) -> list[str]:
    """Modules directly under ``unlearning/`` that are neither a dispatching entry point nor a shim."""
    bad = []
    for module, tree in trees.items():
        parts = module.split(".")
        if len(parts) != 2 or parts[0] != "unlearning" or MODULES.get(module, (None, True))[1]:
            continue
        guards = [n for n in tree.body if _is_main_guard(n)]
        rest = [n for n in tree.body if not _is_main_guard(n)] + [s for g in guards for s in g.orelse]
        if any(not _plain(n) for n in rest):
            kinds = sorted({type(n).__name__ for n in rest if not _plain(n)})
            bad.append(f"{module}: holds {', '.join(kinds)} (move the code into a subpackage)")
        elif guards and not _dispatches_to_cli(tree, guards[0].body):
            bad.append(f"{module}: its __main__ block must only call main() of an unlearning.cli module")
        elif not guards and not any(_is_deprecation_warning(n) for n in tree.body):
            bad.append(f"{module}: neither a python -m entry point nor a deprecation shim")
    if any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in trees["unlearning"].body):
        bad.append("unlearning: its __init__.py holds more than its docstring (import from the subpackages)")
    return bad


def test_unlearning_top_level_holds_only_entry_points_and_shims():
    bad = top_level_violations(TREES)
    assert not bad, "unlearning/ top level:\n" + "\n".join(bad)


def test_top_level_check_can_fail():
    good = ('"""doc"""\nif __name__ == "__main__":\n    from unlearning.cli.train import main\n\n    main()\n'
            'else:\n    import warnings\n    from unlearning.training import run\n'
            '    warnings.warn("moved", DeprecationWarning, stacklevel=2)\n')
    scratch = {
        "unlearning.code": "def run():\n    pass\n",
        "unlearning.loose": "import torch\nX = 1\n",
        "unlearning.entry": 'if __name__ == "__main__":\n    from unlearning.training import run\n    run()\n',
        "unlearning.good": good,
    }
    trees = {**TREES, **{m: ast.parse(src) for m, src in scratch.items()}}
    for m in scratch:
        MODULES[m] = (REPO / "unlearning" / f"{m.split('.')[1]}.py", False)
    try:
        flagged = {b.split(":")[0] for b in top_level_violations(trees)}
    finally:
        for m in scratch:
            del MODULES[m]
    assert flagged == {"unlearning.code", "unlearning.loose", "unlearning.entry"}


# --------------------------------------------------------------------------- (f) one parser helper
#: the packages whose command lines are checked
CLI_PACKAGES = PACKAGES
_OWN_PARSERS = ("HfArgumentParser", "ArgumentParser")


def parser_violations(trees: dict[str, ast.Module], packages=CLI_PACKAGES) -> list[str]:
    """Parsers built other than by ``geffect.cli.dataclass_parser``: a call of ``HfArgumentParser`` or
    ``argparse.ArgumentParser``, a subclass of either, or a command-line module (in ``unlearning.cli``, or
    with a ``build_parser``) that gets its parser neither from ``dataclass_parser`` nor from
    ``unlearning.cli.Command`` (which calls it)."""
    bad = []
    for module, tree in trees.items():
        if module.split(".")[0] not in packages or module == "geffect.cli":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in _OWN_PARSERS:
                bad.append(f"{module}:{node.lineno}: {ast.unparse(node.func)}(...)")
            elif isinstance(node, ast.ClassDef) and any(ast.unparse(b).split(".")[-1] in _OWN_PARSERS
                                                        for b in node.bases):
                bad.append(f"{module}:{node.lineno}: class {node.name} subclasses a parser")
        source = ast.unparse(tree)
        defines = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] + [
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in ast.walk(n.targets[0]) if isinstance(t, ast.Name)]
        is_cli = module.startswith("unlearning.cli.") or "build_parser" in defines
        if is_cli and "dataclass_parser(" not in source and "Command(" not in source:
            bad.append(f"{module}: a command line not built with geffect.cli.dataclass_parser")
    return bad


def test_every_cli_uses_the_one_parser_helper():
    bad = parser_violations(TREES)
    assert not bad, "command lines must be built by geffect.cli.dataclass_parser:\n" + "\n".join(bad)


def test_parser_check_can_fail():
    scratch = {"unlearning.cli._a": "from transformers import HfArgumentParser\np = HfArgumentParser(int)\n",
               "unlearning.cli._b": "import argparse\nclass P(argparse.ArgumentParser):\n    pass\n",
               "unlearning.cli._c": "def build_parser():\n    return None\n",
               "unlearning.cli._d": ("from geffect.cli import dataclass_parser\n"
                                     "def build_parser():\n    return dataclass_parser(int, prog='x')\n"),
               "unlearning.cli._e": ("from unlearning.cli import Command\n"
                                     "build_parser, parse_args = Command(int, 'x').functions\n")}
    flagged = parser_violations({m: ast.parse(src) for m, src in scratch.items()})
    assert sorted({b.split(":")[0] for b in flagged}) == ["unlearning.cli._a", "unlearning.cli._b", "unlearning.cli._c"]
