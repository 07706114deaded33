"""No module-level import cycle inside leap_plugin, and the core knows no toolbox."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "leap_plugin")


def modules():
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def module_level_imports(name, path):
    """leap_plugin modules imported at module level (not inside functions)."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in tree.body:
        stmts = [node]
        if isinstance(node, ast.If):  # module-level conditionals still run at import
            stmts = node.body + node.orelse
        for stmt in stmts:
            if isinstance(stmt, ast.Import):
                found |= {a.name for a in stmt.names if a.name.startswith("leap_plugin")}
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.level:
                    base = package.rsplit(".", stmt.level - 1)[0] if stmt.level > 1 else package
                    target = f"{base}.{stmt.module}" if stmt.module else base
                else:
                    target = stmt.module or ""
                if target.startswith("leap_plugin"):
                    found.add(target)
                    found |= {f"{target}.{a.name}" for a in stmt.names}
    return found


def test_no_module_level_import_cycle():
    mods = modules()
    graph = {m: {t for t in module_level_imports(m, p) if t in mods and t != m} for m, p in mods.items()}
    # a module imports its package's __init__ first: only edges between distinct modules count
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open" and not m.startswith(t + "."):
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_core_knows_no_toolbox():
    for name, path in modules().items():
        if name.startswith(("leap_plugin.core", "leap_plugin.data", "leap_plugin.validation", "leap_plugin.io")):
            text = open(path).read()
            assert "import fastreid" not in text and "from fastreid" not in text, name
            assert "import insightface" not in text and "from insightface" not in text, name
