"""Imports point one way: no circle among the project's modules, not even one a function-level import hides (such an
import only defers the circle to the first call)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the project's packages, and the folder each module name is relative to
PACKAGES = {"stages": ROOT, "bench": ROOT, "pipeline": ROOT / "workflow" / "rules"}


def module_name(path: Path, base: Path) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p, base): p for name, base in PACKAGES.items() for p in sorted((base / name).rglob("*.py"))}


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of a ``from ... import`` (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules ``module`` imports, at any depth of its code: ``from a import b`` names module ``a.b``
    where that is one, ``a`` otherwise."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(node, module, path.name == "__init__.py")
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules and name != module}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected part of ``graph`` that has one (Tarjan)."""
    index, low, stack, on_stack, parts = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph[v]:
                parts.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return parts


def test_the_project_has_no_import_circle():
    modules = project_modules()
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    assert cycles(graph) == []


def test_the_check_finds_a_circle_that_a_function_level_import_hides(tmp_path):
    (tmp_path / "a.py").write_text("from b import x\n")
    (tmp_path / "b.py").write_text("def x():\n    from a import y\n")
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    assert cycles({m: imports_of(m, p, modules) for m, p in modules.items()}) == [["a", "b"]]


def test_the_job_imports_nothing_from_the_shared_machinery():
    """The job is the seam every stage imports: the machinery imports it, never the other way round."""
    modules = project_modules()
    assert not {m for m in imports_of("stages.core.job", modules["stages.core.job"], modules) if m.startswith("stages.core")}
