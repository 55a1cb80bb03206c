"""The packages import one another in one direction only.

Every `import` / `from ... import` of every module (top level and inside
functions alike, read with `ast`, nothing executed) is an arrow from its
package to the imported one; the arrows must form no cycle and must follow
LAYERS, lowest first: a package may import only packages before it.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("common", "net_specs", "layers", "data", "surgery", "solvers", "demo", "bench", "tests")


def package_imports():
    """{package: {imported package: [module files]}} over the repository's packages."""
    arrows = {}
    for package in LAYERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        targets = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        targets = [node.module]
                    else:
                        continue
                    for target in targets:
                        top = target.split(".")[0]
                        if top in LAYERS and top != package:
                            arrows.setdefault(package, {}).setdefault(top, []).append(
                                os.path.relpath(path, ROOT))
    return arrows


def find_cycle(arrows):
    """One cycle of the package graph as a list of packages, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in arrows.get(node, {}):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for package in list(arrows):
        if package not in state:
            found = visit(package, [package])
            if found:
                return found
    return None


def test_no_import_cycles_between_packages():
    assert find_cycle(package_imports()) is None


def test_imports_point_down_the_layers():
    upward = [f"{src} imports {dst} ({', '.join(sorted(set(files)))})"
              for src, targets in package_imports().items() for dst, files in targets.items()
              if LAYERS.index(dst) > LAYERS.index(src)]
    assert upward == []


def test_the_checker_sees_a_cycle():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None
