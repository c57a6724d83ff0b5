"""The architecture as rules the code must keep (README, "Where code goes"): rooms import only rooms below them,
Ray stays out of the library and the config, the config stops at builders, commands are leaves, no import cycles."""

import ast
from pathlib import Path
from typing import Dict, Set

import pytest

PKG = Path(__file__).resolve().parents[2] / "ncl_ray"
# lowest first: a module may import its own room and the rooms before it, never one after
ORDER = [{"ncl", "model", "metrics"}, {"config"}, {"ui"}, {"runtime"}, {"data"}, {"evaluation"}, {"train"},
         {"serve"}, {"commands"}, {"cli", "__main__", "__init__"}]
RAY_FREE = {"ncl", "model", "metrics", "config"}  # the math and the schema: testable in one process, no Ray
CONFIG_FREE = {"ncl", "model", "metrics"}  # take plain arguments; config becomes objects in builders


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).replace(".__init__", "")


def _imports(path: Path) -> Set[str]:
    """Every module an import statement names, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from ncl_ray.config import schema`
    return out


MODULES: Dict[str, Set[str]] = {_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank(module: str) -> int:
    return next(i for i, rooms in enumerate(ORDER) if room(module) in rooms)


def _ours(imports: Set[str]) -> Set[str]:
    """The ncl_ray modules among `imports` (a `from package import module` counts as the module)."""
    return {m for m in imports if m in MODULES and m != "ncl_ray"}


def test_the_scanner_sees_imports_inside_functions():
    assert "ray.train" in MODULES["ncl_ray.train.worker"]  # imported inside the Worker's methods
    assert "ncl_ray.train.job" in MODULES["ncl_ray.commands.train"]  # imported inside main


def test_every_module_belongs_to_a_room_of_the_order():
    for module in MODULES:
        rank(module)  # StopIteration: a new top-level room needs its place in ORDER


@pytest.mark.parametrize("module", sorted(MODULES))
def test_rooms_import_only_rooms_below_them(module):
    upward = sorted(m for m in _ours(MODULES[module]) if rank(m) > rank(module))
    assert not upward, f"{module} imports {upward}, which sit above it in the layering"


def test_ray_stays_out_of_the_library_and_the_config():
    bad = {m: sorted(i for i in imps if i == "ray" or i.startswith("ray."))
           for m, imps in MODULES.items() if room(m) in RAY_FREE or "No Ray" in _docstring(m)}
    assert {m: v for m, v in bad.items() if v} == {}


def _path(module: str) -> Path:
    path = PKG.parent / (module.replace(".", "/") + ".py")
    return path if path.exists() else PKG.parent / module.replace(".", "/") / "__init__.py"


def _docstring(module: str) -> str:
    return ast.get_docstring(ast.parse(_path(module).read_text())) or ""


def test_the_library_does_not_read_the_config():
    bad = {m: sorted(i for i in imps if i.startswith("ncl_ray.config"))
           for m, imps in MODULES.items() if room(m) in CONFIG_FREE}
    assert {m: v for m, v in bad.items() if v} == {}


def test_commands_are_leaves():
    for module, imps in MODULES.items():
        commands = {m for m in _ours(imps) if room(m) == "commands" and m != "ncl_ray.commands._args"}
        if module != "ncl_ray.cli":
            assert not commands, f"{module} imports the commands {sorted(commands)}: move the shared work down"


def test_no_import_cycles():
    graph = {m: _ours(imps) - {m} for m, imps in MODULES.items()}
    seen: Set[str] = set()

    def visit(m, path):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in seen:
            return
        for n in sorted(graph[m]):
            visit(n, path + [m])
        seen.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_modules_are_small_and_say_what_they_are():
    for module in MODULES:
        path = _path(module)
        assert len(path.read_text().splitlines()) < 300, f"{path.name} has 300 lines or more: split it"
        assert _docstring(module) or path.name == "__main__.py", f"{module} has no docstring"


def test_unit_tests_sit_in_their_rooms():
    """tests/unit/<room>/ mirrors the package, so a change's tests are found next to it; only the house rules
    (this file) sit at the top."""
    here = Path(__file__).resolve().parent
    rooms = {r for group in ORDER for r in group} - {"cli", "__main__", "__init__", "metrics"}
    assert [p.name for p in here.glob("test_*.py")] == ["test_layering.py"]
    folders = {p.name for p in here.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= rooms, folders - rooms
    assert all(any((here / f).glob("test_*.py")) for f in folders)


def test_functions_read_in_one_sitting():
    """No function (or method) is longer than 80 lines: a longer one is split into named steps."""
    long = []
    for module in MODULES:
        for node in ast.walk(ast.parse(_path(module).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_the_clip_tasks_import_no_torch():
    """Ray Data's workers import the clip cache's modules to attach tokens: without torch they start seconds sooner."""
    import subprocess
    import sys

    code = "import sys, ncl_ray.data.pipeline, ncl_ray.data.pairstore; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"



def test_functions_take_values_not_long_parameter_lists():
    """No top-level function takes more than 8 parameters: settings that travel together are one value
    (ModelSpec, StepOptions, MethodSettings, ...)."""
    long = []
    for module in MODULES:
        for node in ast.parse(_path(module).read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                if n > 8:
                    long.append(f"{module}.{node.name}: {n} parameters")
    assert not long, long
