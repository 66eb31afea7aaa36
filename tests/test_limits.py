"""Size limits of the package: modules, functions and parameter lists stay readable.

No module in job/ over 500 lines, no function over 60 lines, none with more than 7 parameters
(``self``/``cls`` not counted; ``*args`` and ``**kwargs`` count one each). The failure names each
offender as ``path:line name``, so the fix starts at the right place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import job

PACKAGE = Path(job.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 7


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    count = len(positional) + len(args.kwonlyargs)
    count += (args.vararg is not None) + (args.kwarg is not None)
    if positional and positional[0].arg in ("self", "cls"):
        count -= 1
    return count


def offenders(source: str, name: str) -> list[str]:
    """Each limit that ``source`` (shown as ``name``) crosses, one line each."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: module of {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        params = parameter_count(node)
        if length > MAX_FUNCTION_LINES:
            found.append(
                f"{name}:{node.lineno} {node.name}: {length} lines (limit {MAX_FUNCTION_LINES})"
            )
        if params > MAX_PARAMETERS:
            found.append(
                f"{name}:{node.lineno} {node.name}: {params} parameters (limit {MAX_PARAMETERS})"
            )
    return found


def test_the_check_names_each_offender() -> None:
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = (
        "def many(a, b, c, d, e, f, g, *rest):\n    pass\n"
        "class C:\n    def fine(self, a, b, c, d, e, f, g):\n        pass\n"
        f"def long():\n{long_body}\n"
    )
    assert offenders(source, "m.py") == [
        "m.py:1 many: 8 parameters (limit 7)",
        f"m.py:6 long: {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES})",
    ]
    assert offenders("x = 1\n" * (MAX_MODULE_LINES + 1), "big.py") == [
        f"big.py: module of {MAX_MODULE_LINES + 1} lines (limit {MAX_MODULE_LINES})"
    ]


def test_no_module_function_or_parameter_list_over_the_limits() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30  # the package was found
    found = [
        line
        for module in modules
        for line in offenders(module.read_text(), str(module.relative_to(PACKAGE.parent)))
    ]
    assert found == [], "over the limits:\n" + "\n".join(found)
