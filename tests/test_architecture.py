"""The package's layering (docs/ARCHITECTURE.md): each layer imports only the layers below it, no import cycles
anywhere (module-level or inside functions), one training loop, and a CLI that answers --help without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sampledsoftmax"

# layer of each top-level part of the package; a module may import its own layer or lower ones
LAYERS = {
    "": 0, "errors": 0, "functional": 0, "losses": 0, "samplers": 0, "parallel": 0,  # core
    "data": 1,
    "training": 2,
    "embeddings": 3, "lm": 3,  # tasks (never each other)
    "hf": 3,  # Hugging Face integration: core + transformers
    "experiments": 4,
    "cli": 5, "__main__": 5,
}
TASKS = {"embeddings", "lm"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every sampledsoftmax module that `name` imports, anywhere in the file (functions included)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `import sampledsoftmax.x.y as z` -> the deepest module that exists
                t = t.rpartition(".")[0]
            if t.startswith("sampledsoftmax") and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_walk_sees_the_imports_it_must():  # guards the walker itself: a walk that finds nothing passes anything
    assert "sampledsoftmax.training.loop" in GRAPH["sampledsoftmax.embeddings.train"]
    assert "sampledsoftmax.losses" in GRAPH["sampledsoftmax.training.builders"]
    assert "sampledsoftmax.training.distributed" in GRAPH["sampledsoftmax.cli"]  # an import inside a function
    assert set(LAYERS) >= {_part(m) for m in MODULES}, "a new top-level module needs a layer in LAYERS"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(GRAPH[m]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_every_import_points_down():
    upward = []
    for m, deps in GRAPH.items():
        for dep in deps:
            a, b = _part(m), _part(dep)
            if LAYERS[b] > LAYERS[a] or (a in TASKS and b in TASKS and a != b):
                upward.append(f"{m} ({a or 'core'}) imports {dep} ({b or 'core'})")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_the_core_imports_only_torch_and_the_standard_library():
    core = [m for m in MODULES if LAYERS[_part(m)] == 0]
    third_party = set()
    for m in core:
        for node in ast.walk(ast.parse(MODULES[m].read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            third_party |= {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"torch", "sampledsoftmax"}
    assert not third_party


def test_one_training_loop():
    """Only training/loop.py walks the epochs of batches; the tasks give batches and steps."""
    walkers = [m for m, p in MODULES.items() if "shard_batches(stream" in p.read_text(encoding="utf-8")]
    assert walkers == ["sampledsoftmax.training.loop"]


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sweep", "--help"], ["bench", "--help"], []])
def test_cli_parser_imports_no_torch(argv):
    code = ("import sys\nfrom sampledsoftmax.cli import main\nrc = main(%r)\n"
            "print(rc, 'torch' in sys.modules)" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    rc, torch_loaded = out.stdout.split()[-2:]
    assert torch_loaded == "False", out.stdout
    assert int(rc) == (0 if argv else 2)


def test_package_exports_load_lazily():
    code = ("import sys, sampledsoftmax as s\nprint('torch' in sys.modules)\n"
            "print(s.SampledSoftmaxLoss.__module__, 'torch' in sys.modules, sorted(s.__all__) == sorted(dir(s)) or "
            "set(s.__all__) <= set(dir(s)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    assert out == ["False", "sampledsoftmax.losses", "True", "True"]
