"""Public functions of more than six parameters take the rest by keyword, so that a call names what it sets."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_POSITIONAL = 6


def wide_positional(source: str) -> list[str]:
    """Public functions and methods of `source` with more than six parameters, more than six of them positional."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            args = node.args
            positional = [a for a in args.posonlyargs + args.args if a.arg not in ("self", "cls")]
            if len(positional) + len(args.kwonlyargs) > MAX_POSITIONAL and len(positional) > MAX_POSITIONAL:
                found.append(f"{node.name} (line {node.lineno}: {len(positional)} positional)")
    return found


def test_every_wide_public_function_takes_its_options_by_keyword():
    wide = {str(path.relative_to(ROOT)): names for folder in ("src", "benchmarks")
            for path in sorted((ROOT / folder).rglob("*.py")) if (names := wide_positional(path.read_text()))}
    assert wide == {}, f"add a bare * after the first few parameters: {wide}"


def test_the_check_sees_a_wide_positional_function():
    assert wide_positional("def f(a, b, c, d, e, f, g=1): pass") == ["f (line 1: 7 positional)"]
    assert wide_positional("def f(a, b, *, c, d, e, f, g=1): pass") == []
    assert wide_positional("def _f(a, b, c, d, e, f, g=1): pass") == []
