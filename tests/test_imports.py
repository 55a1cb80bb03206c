"""The packages import one another in one direction only, and no module
imports itself round a circle.

Every `import` / `from ... import` of every module (top level and inside
functions alike, read with `ast`, nothing executed) is an arrow from its
package to the imported one; the arrows must form no cycle and must follow
LAYERS, lowest first: a package may import only packages before it. The
same arrows between modules (relative imports resolved) must form no cycle
either: a circle inside a package is as much a tangle as one between them.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("common", "netio", "net_specs", "layers", "data", "surgery", "solvers", "demo", "bench", "tests")


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


def module_files():
    """{dotted module name: (path, is a package's __init__)} over LAYERS."""
    found = {}
    for package in LAYERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                    is_package = parts[-1] == "__init__"
                    found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imported_modules(tree, module, is_package, known):
    """The modules of `known` that the statements of `tree` (module `module`)
    import: `from P import name` is P.name when that is a module, else P;
    relative imports are resolved against the module's package."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target


def module_imports():
    """{module: {imported module: []}} over the repository's modules."""
    known = module_files()
    arrows = {}
    for module, (path, is_package) in known.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for target in imported_modules(tree, module, is_package, known):
            arrows.setdefault(module, {})[target] = []
    return arrows


def find_cycle(arrows):
    """One cycle of a graph {node: {node: ...}} as a list of nodes, or None."""
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


def test_no_import_cycles_between_modules():
    assert find_cycle(module_imports()) is None


def test_the_module_checker_resolves_relative_imports():
    """A circle made of relative imports (a function-level one included) is
    an arrow each way, as tiles.py <-> infer.py once were."""
    known = {"pkg": None, "pkg.a": None, "pkg.b": None, "pkg.sub": None, "pkg.sub.c": None}
    a = ast.parse("from . import b\nfrom .sub.c import f\n")
    b = ast.parse("def g():\n    from .a import h\n")
    c = ast.parse("from ..a import x\nimport pkg.b\n")
    arrows = {"pkg.a": dict.fromkeys(imported_modules(a, "pkg.a", False, known), []),
              "pkg.b": dict.fromkeys(imported_modules(b, "pkg.b", False, known), []),
              "pkg.sub.c": dict.fromkeys(imported_modules(c, "pkg.sub.c", False, known), [])}
    assert arrows == {"pkg.a": {"pkg.b": [], "pkg.sub.c": []}, "pkg.b": {"pkg.a": []},
                      "pkg.sub.c": {"pkg.a": [], "pkg.b": []}}
    assert find_cycle(arrows) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"],
                                  ["pkg.a", "pkg.sub.c", "pkg.a"])


def test_imports_point_down_the_layers():
    upward = [f"{src} imports {dst} ({', '.join(sorted(set(files)))})"
              for src, targets in package_imports().items() for dst, files in targets.items()
              if LAYERS.index(dst) > LAYERS.index(src)]
    assert upward == []


def test_the_checker_sees_a_cycle():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None
