"""Static checks and a restricted loader for plug-in source (ARCHITECTURE.md section 5, first layer).

The static check walks the AST: imports only of the modules in an allow-list (exact names), no dunder or private
(``_``-prefixed) attributes or names, no frame, generator or code introspection (``gi_frame``, ``f_back``,
``f_globals``, ...), no ``open``/``exec``/``eval``/``compile``/``globals`` and friends, no attribute that reaches
files, host callbacks or JAX internals. ``load_plugin`` then executes checked source with a reduced set of builtins
and an ``__import__`` that admits only the allow-list and hands out read-only views of the modules: an attribute of
a view that is itself a module outside the allow-list is refused at run time. That closes the module graph, which
the AST cannot see: ``jax.version`` imports ``subprocess`` and ``jax.interpreters`` imports ``os``, so
``jax.version.subprocess.run(...)`` is plain attribute access. This is the first layer; the validation gate
(``tasks/runtime/sandbox.py``) runs the checks in a separate, limited process before any experiment does, and experiments
load candidates through the same loader.
"""

from __future__ import annotations

import ast
import builtins
import types
from collections.abc import Callable

ALLOWED_IMPORTS = ("jax", "jax.numpy", "jax.nn", "jax.lax", "jax.random", "math", "functools")
# modules a plug-in may import or reach as an attribute of an allowed module (exact names; jax's other submodules,
# jax.version and jax.interpreters among them, lead to subprocess, os and jaxlib)
ALLOWED_MODULES = frozenset({
    *ALLOWED_IMPORTS, "jax.numpy.linalg", "jax.numpy.fft", "jax.nn.initializers", "jax.lax.linalg", "jax.scipy",
    "jax.scipy.special", "jax.tree_util", "jax.tree",
})
FORBIDDEN_NAMES = {
    "open", "exec", "eval", "compile", "globals", "locals", "vars", "input", "breakpoint", "help",
    "getattr", "setattr", "delattr", "__import__", "memoryview", "exit", "quit", "dir",
}
# attributes that reach files, host callbacks or JAX internals from inside the allowed modules
FORBIDDEN_ATTRIBUTES = {
    "save", "savez", "savez_compressed", "load", "fromfile", "tofile", "genfromtxt", "loadtxt", "savetxt",
    "pure_callback", "io_callback", "callback", "host_callback", "debug", "experimental", "_src", "extend",
    "distributed", "profiler", "monitoring", "config",
    "dump", "ctypes",  # numpy arrays (jax.device_get) pickle to a path; .ctypes leads to the ctypes module
}
# frame, generator, coroutine, traceback and code introspection: f_back and f_globals walk up to the caller's module
INTROSPECTION_PREFIXES = ("gi_", "cr_", "ag_", "f_", "tb_", "co_")
SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "isinstance", "len", "list", "max", "min",
    "pow", "range", "reversed", "round", "slice", "sorted", "sum", "tuple", "zip", "ValueError", "TypeError",
    "True", "False", "None", "print",
)


class PluginError(ValueError):
    """Plug-in source that fails the static check or cannot be loaded; the message is the reason."""


def _allowed(module: str) -> bool:
    return module in ALLOWED_MODULES


def static_check(source: str, name: str) -> None:
    """Raise :class:`PluginError` with a reason when ``source`` breaks the rules or lacks ``def name``."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise PluginError(f"syntax error at line {exc.lineno}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _allowed(alias.name) or any(p in FORBIDDEN_ATTRIBUTES for p in alias.name.split(".")):
                    raise PluginError(
                        f"line {node.lineno}: import of {alias.name!r} is not allowed "
                        f"(allowed: {', '.join(sorted(ALLOWED_MODULES))})"
                    )
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [a.name for a in node.names]
            if node.level or not node.module or not _allowed(node.module) or any(
                    p in FORBIDDEN_ATTRIBUTES for n in names for p in n.split(".")):
                raise PluginError(
                    f"line {node.lineno}: import from {node.module or '.'!r} is not allowed "
                    f"(allowed: {', '.join(sorted(ALLOWED_MODULES))})"
                )
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            raise PluginError(f"line {node.lineno}: dunder attribute {node.attr!r} is not allowed")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise PluginError(f"line {node.lineno}: private attribute {node.attr!r} is not allowed")
        elif isinstance(node, ast.Attribute) and node.attr.startswith(INTROSPECTION_PREFIXES):
            raise PluginError(f"line {node.lineno}: attribute {node.attr!r} is not allowed (frame, generator and "
                              "code introspection is out of reach of a plug-in)")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            raise PluginError(f"line {node.lineno}: attribute {node.attr!r} is not allowed (files, host callbacks "
                              "and JAX internals are out of reach of a plug-in)")
        elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("__")):
            raise PluginError(f"line {node.lineno}: use of {node.id!r} is not allowed")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            raise PluginError(f"line {node.lineno}: global/nonlocal statements are not allowed")
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not functions:
        raise PluginError(f"no top-level function named {name!r}")


class ModuleView:
    """What a plug-in sees of an allowed module: its attributes, read-only, minus modules outside the allow-list.

    A submodule in the allow-list comes back as a view too; any other module (``jax.version``, whose
    ``subprocess`` attribute runs programs) raises ``AttributeError``. No ``__name__``: Python's ``from M import x``
    would otherwise fall back to ``sys.modules[M.__name__ + ".x"]`` and hand out the refused module.
    """

    __slots__ = ("_module",)

    def __init__(self, module: types.ModuleType):
        object.__setattr__(self, "_module", module)

    def __getattr__(self, attr: str):
        module = object.__getattribute__(self, "_module")
        if attr.startswith("_") or attr in FORBIDDEN_ATTRIBUTES:
            raise AttributeError(f"attribute {attr!r} of module {module.__name__!r} is out of reach of a plug-in")
        value = getattr(module, attr)
        if isinstance(value, types.ModuleType):
            if not _allowed(value.__name__):
                raise AttributeError(f"{module.__name__}.{attr} is module {value.__name__!r}, out of reach of a "
                                     f"plug-in (allowed modules: {', '.join(sorted(ALLOWED_MODULES))})")
            return ModuleView(value)
        return value

    def __setattr__(self, attr: str, value) -> None:
        raise AttributeError(f"a plug-in cannot change module {object.__getattribute__(self, '_module').__name__!r}")

    def __delattr__(self, attr: str) -> None:
        self.__setattr__(attr, None)

    def __dir__(self) -> list[str]:
        return [a for a in dir(object.__getattribute__(self, "_module")) if not a.startswith("_")]

    def __repr__(self) -> str:
        return f"<plug-in view of module {object.__getattribute__(self, '_module').__name__!r}>"

    def __reduce__(self):  # a loaded plug-in's globals survive (cloud)pickling: the module goes by reference
        return ModuleView, (object.__getattribute__(self, "_module"),)


def _restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or not _allowed(name):
        raise ImportError(f"import of {name!r} is not allowed in a plug-in")
    view = ModuleView(builtins.__import__(name, globals, locals, fromlist, level))
    for attr in fromlist or ():
        if attr != "*":
            try:
                view.__getattr__(attr)  # ``from jax import version``: say why here, not as a bare ImportError later
            except AttributeError as exc:
                raise ImportError(str(exc)) from None
    return view


def float_literal(node: ast.AST) -> float | None:
    """The value of a float literal (a negated literal counts as one negative literal), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, float):
        return -node.operand.value
    return None


def _docstring_owners(module: ast.AST) -> list[ast.Module | ast.FunctionDef]:
    """The module and every function whose first statement is an expression (a docstring's place)."""
    return [n for n in ast.walk(module) if isinstance(n, ast.Module | ast.FunctionDef) and n.body
            and isinstance(n.body[0], ast.Expr)]


def float_literals(module: ast.AST) -> list[tuple[ast.AST, float]]:
    """Every float literal of a parsed source in source order (a negated literal is one node), docstrings aside."""
    docs = {id(n.body[0].value) for n in _docstring_owners(module)}
    found, inner = [], set()
    for node in ast.walk(module):
        if id(node) in docs or id(node) in inner:
            continue
        value = float_literal(node)
        if value is not None:
            if isinstance(node, ast.UnaryOp):
                inner.add(id(node.operand))
            found.append((node, value))
    return sorted(found, key=lambda p: (p[0].lineno, p[0].col_offset))


def lift_literals(source: str, name: str, param: str = "__k") -> tuple[ast.Module, tuple[float, ...]] | None:
    """Source with its float literals as a parameter: (the syntax tree without docstrings, function ``name`` taking
    ``param`` first and reading literal ``i`` as ``param[i]``, and the literals' values in order), or None when
    the source does not parse or lacks ``def name``. Two sources that differ only in their float literals (and
    docstrings) give the same tree (``ast.dump``)."""
    try:
        module = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    fn = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if fn is None:
        return None
    literals = float_literals(module)
    index = {id(node): i for i, (node, _) in enumerate(literals)}

    class Lift(ast.NodeTransformer):
        def visit(self, node):
            if id(node) in index:
                return ast.Subscript(ast.Name(param, ast.Load()), ast.Constant(index[id(node)]), ast.Load())
            return super().visit(node)

    for parent in _docstring_owners(module):
        first = parent.body[0].value
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            parent.body = parent.body[1:] or [ast.Pass()]
    module = Lift().visit(module)
    fn.args.args.insert(0, ast.arg(param))
    return ast.fix_missing_locations(module), tuple(v for _, v in literals)


def load_plugin(source: str, name: str) -> Callable:
    """Statically check ``source``, execute it with restricted builtins, and return ``name``."""
    static_check(source, name)
    safe = {k: getattr(builtins, k) for k in SAFE_BUILTINS if hasattr(builtins, k)}
    safe["__import__"] = _restricted_import
    namespace: dict = {"__builtins__": safe, "__name__": "plugin"}
    try:
        exec(compile(source, f"<plugin {name}>", "exec"), namespace)  # noqa: S102 - checked source, see module doc
    except Exception as exc:  # noqa: BLE001 - any error of the candidate: the reason goes back to the repair loop
        raise PluginError(f"loading failed: {type(exc).__name__}: {exc}") from None
    fn = namespace.get(name)
    if not callable(fn):
        raise PluginError(f"{name!r} is not a function")
    if isinstance(fn, types.FunctionType) and fn.__code__.co_filename == f"<plugin {name}>":
        # a function this source defined keeps its text, so kernels can recognise a rendered symbolic plug-in
        # (jaxlib_kernels.interpreter.expression_of); never set on an object the source merely re-exports
        fn.__plugin_source__ = source
    return fn
