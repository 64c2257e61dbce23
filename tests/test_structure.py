"""The shape of the package: no import cycles among numbarnn's modules (imports inside
functions count: a cycle hidden in a function is still a cycle, and the bugs of issue 14
came from one), and one Trainer class whatever the device."""
import ast
from pathlib import Path

import pytest

import numbarnn
from numbarnn.trainer import Trainer

PACKAGE = Path(numbarnn.__file__).resolve().parent


def module_names() -> dict:
    """Dotted module name -> (file, is_package) for every module under numbarnn/."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict:
    """Module -> the numbarnn modules it imports anywhere in its text (top level or inside
    functions). ``from . import x`` counts as importing the submodule x when there is one,
    else the package; the implicit import of a parent package is not counted (Python
    runs a package's ``__init__`` before its submodules, never the other way round)."""
    modules = module_names()
    graph = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        base = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = base[:len(base) - (node.level - 1)]
                    target = ".".join(parent + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        graph[name].add(sub)
                    elif target in modules:
                        graph[name].add(target)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # module -> 1 while on the current path, 2 when done

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycles_among_numbarnn_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    # The check itself can fail: the graph of the old layout (trainer imported checkpoint
    # inside Trainer.save, checkpoint imported trainer inside load_checkpoint) is a cycle.
    old = {"numbarnn.trainer": {"numbarnn.checkpoint"}, "numbarnn.checkpoint": {"numbarnn.trainer"}}
    assert find_cycle(old) == ["numbarnn.checkpoint", "numbarnn.trainer", "numbarnn.checkpoint"]
    assert "numbarnn.checkpoint" in import_graph()["numbarnn.cli"]  # function-level imports are seen


def test_the_checkpoint_format_and_the_cuda_backend_never_import_the_trainer():
    graph = import_graph()
    for module in ("numbarnn.checkpoint_file", "numbarnn.fit", "numbarnn.cpu_backend", "numbarnn.cuda.backend",
                   "numbarnn.cuda.model", "numbarnn.sequence_model"):
        assert "numbarnn.trainer" not in graph[module], module
    assert "numbarnn" not in graph["numbarnn.checkpoint_file"]  # the version comes from numbarnn._version


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_one_trainer_class_and_its_device(cell):
    trainer = numbarnn.make_trainer(cell, vocab_size=4, hidden_size=3, seed=0)
    assert type(trainer) is Trainer and trainer.device == "cpu" and trainer.to("cpu") is trainer
    assert trainer.model is trainer.backend.model and trainer.optimizer is trainer.backend.optimizer
