"""make lint: no file over 450 lines and no function over 80 in mirrord/ (issue 14's
measure of a module and a function a reader can hold in their head). Prints each offender
with its size and exits 1; ``--top N`` prints the N largest of each instead."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FILE_MAX, FUNC_MAX = 450, 80


def sizes(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    files, funcs = [], []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(root.parent)
        files.append((len(source.splitlines()), str(name)))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                funcs.append((length, f"{name}:{node.lineno} {node.name}"))
    return sorted(files, reverse=True), sorted(funcs, reverse=True)


def main(argv: list[str]) -> int:
    files, funcs = sizes(Path(__file__).resolve().parent.parent / "mirrord")
    if argv[:1] == ["--top"]:
        n = int(argv[1])
        for title, rows in (("files", files[:n]), ("functions", funcs[:n])):
            print(f"largest {title}:")
            print("\n".join(f"  {size:5d}  {where}" for size, where in rows))
        return 0
    bad = [f"file {w}: {s} lines > {FILE_MAX}" for s, w in files if s > FILE_MAX]
    bad += [f"function {w}: {s} lines > {FUNC_MAX}" for s, w in funcs if s > FUNC_MAX]
    print("\n".join(bad) or f"sizes: every file <= {FILE_MAX} lines, every function <= {FUNC_MAX}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
