"""The import graph follows the flow: every import of a budgetnet module (at the top of a file, inside a function or
under `if TYPE_CHECKING:`) goes to its own package or one earlier in LAYERS, and no module imports itself back through
others."""
import ast
from pathlib import Path

import budgetnet

ROOT = Path(budgetnet.__file__).parent
# each unit (a top-level module or package) may import only itself and the units before it
LAYERS = ("budgetnet", "errors", "atomic", "choices", "plots", "console", "design", "data", "config", "training",
          "evaluation", "deploy", "workflows", "study", "cli", "__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The budgetnet modules `path` imports, those under `if TYPE_CHECKING:` included (an annotation's import is a
    dependency too)."""
    tree = ast.parse(path.read_text())
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "budgetnet"}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else None
            target = node.module if not node.level else ".".join(filter(None, [base, node.module]))
            if target.split(".")[0] != "budgetnet":
                continue
            for a in node.names:  # `from budgetnet.training import checkpoint` imports a module
                sub = f"{target}.{a.name}"
                found.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
                          or (ROOT.parent / sub.replace(".", "/") / "__init__.py").is_file() else target)
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "budgetnet"


GRAPH = {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert {unit(m) for m in GRAPH} == set(LAYERS)


def test_nothing_imports_a_later_layer():
    upward = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in sorted(targets)
              if LAYERS.index(unit(t)) > LAYERS.index(unit(m))]
    assert upward == []


def test_no_import_cycle():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for t in GRAPH.get(start, ()):
            if t == goal or (t not in seen and not seen.add(t) and reaches(t, goal, seen)):
                return True
        return False

    # a package's __init__ may import its own modules (the package's API), which import their siblings, not it
    cycles = [m for m in GRAPH if reaches(m, m, set())]
    assert cycles == []
