"""The package's layers: every import of a libai_vit module points down this order (a package may
import its own modules), and no chain of imports comes back to where it started. Read from the
source (every import statement, also those inside functions), so nothing is imported to check.

    parallel, vm_scheduler, launch, losses -> kernels -> layers -> compat, pretrained -> models
    -> libai_vit/__init__ -> config -> data, optim, onnx_export -> engine, inference
"""

import ast
import os

from conftest import ROOT

LAYERS = [
    {"parallel", "vm_scheduler", "launch", "losses"},
    {"kernels"},
    {"layers"},
    {"compat", "pretrained"},
    {"models"},
    {"__init__"},
    {"config"},
    {"data", "optim", "onnx_export"},
    {"engine", "inference"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    """{dotted module name: its file} of every module of libai_vit."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "libai_vit")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(path, modules):
    """The libai_vit modules the file at `path` imports."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def _package(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_import_points_down_the_layers():
    modules = _modules()
    assert set(map(_package, modules)) <= set(LEVEL), (
        f"place these in LAYERS: {sorted(set(map(_package, modules)) - set(LEVEL))}"
    )
    upward = []
    for module, path in modules.items():
        for target in _imports(path, modules):
            a, b = _package(module), _package(target)
            if a != b and LEVEL[b] >= LEVEL[a]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports against the layers: " + "; ".join(sorted(upward))


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    state, cycles = {}, []  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n) :] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(cycles)
