"""The texts a user reads: the generated key table matches the code, no text points at notes
a user does not have, the README stays an entry point, and imports inside functions of the
fastreid adapter say why they are there."""
import ast
import os
import re

import leap_plugin  # noqa: F401
from leap_plugin.config_reference import config_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ("README.md", "docs", "leap_plugin", "benchmarks", "tests", "projects", "Makefile", "setup.py")
#: References to a tracker or design notes a user cannot follow.
UNFOLLOWABLE = re.compile(r"SPEC|\b[Ii]ssues? #?[0-9]+|\.\./shared|\blent\b")


def test_docs_config_md_is_generated_from_the_declarations():
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        assert f.read() == config_reference(), "regenerate: python -m leap_plugin.config_reference > docs/config.md"


def _text_files():
    for top in TEXTS:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "runs", "face_runs")]
            for name in files:
                if name.endswith((".py", ".md", ".yml", ".txt", ".sh")):
                    yield os.path.join(folder, name)


def test_no_text_points_at_notes_a_user_does_not_have():
    here = os.path.abspath(__file__)
    found = []
    for path in _text_files():
        if os.path.abspath(path) == here:
            continue
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if UNFOLLOWABLE.search(line):
                    found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_readme_is_an_entry_point():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert len(text.splitlines()) <= 300
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert os.path.isfile(os.path.join(ROOT, link)), link


def test_imports_between_adapter_modules_inside_functions_say_why():
    """A function-level import of a sibling module hides a dependency; where one is needed
    (fastreid's modules import only after the compatibility patches), a comment says so."""
    unexplained = []
    folder = os.path.join(ROOT, "leap_plugin", "reid")
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            source = open(path).read()
            lines = source.splitlines()
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and inner.level > 0:
                        above = lines[inner.lineno - 2].strip() if inner.lineno > 1 else ""
                        same = lines[inner.lineno - 1]
                        block = [lines[i].strip() for i in range(max(0, inner.lineno - 6), inner.lineno - 1)]
                        if "#" not in same and not above.startswith("#") and not any(b.startswith("#") for b in block):
                            unexplained.append(f"{os.path.relpath(path, ROOT)}:{inner.lineno}")
    assert not unexplained, unexplained
