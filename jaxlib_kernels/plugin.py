"""Static checks and a restricted loader for plug-in source (DESIGN.md section 5, first layer).

The static check walks the AST: imports only from an allow-list, no dunder attributes or names, no
``open``/``exec``/``eval``/``compile``/``globals`` and friends. ``load_plugin`` then executes checked source with
a reduced set of builtins and an ``__import__`` that admits only the allow-list. This is the first layer; the
validation gate (``tasks/sandbox.py``) runs it in a separate, limited process before any experiment does.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable

ALLOWED_IMPORTS = ("jax", "jax.numpy", "jax.nn", "jax.lax", "math", "functools")
FORBIDDEN_NAMES = {
    "open", "exec", "eval", "compile", "globals", "locals", "vars", "input", "breakpoint", "help",
    "getattr", "setattr", "delattr", "__import__", "memoryview", "exit", "quit", "dir",
}
# attributes that reach files, host callbacks or JAX internals from inside the allowed modules
FORBIDDEN_ATTRIBUTES = {
    "save", "savez", "savez_compressed", "load", "fromfile", "tofile", "genfromtxt", "loadtxt", "savetxt",
    "pure_callback", "io_callback", "callback", "host_callback", "debug", "experimental", "_src", "extend",
    "distributed", "profiler", "monitoring", "config",
}
SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "isinstance", "len", "list", "max", "min",
    "pow", "range", "reversed", "round", "slice", "sorted", "sum", "tuple", "zip", "ValueError", "TypeError",
    "True", "False", "None", "print",
)


class PluginError(ValueError):
    """Plug-in source that fails the static check or cannot be loaded; the message is the reason."""


def _allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED_IMPORTS)


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
                        f"(allowed: {', '.join(ALLOWED_IMPORTS)})"
                    )
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [a.name for a in node.names]
            if node.level or not node.module or not _allowed(node.module) or any(
                    p in FORBIDDEN_ATTRIBUTES for n in names for p in n.split(".")):
                raise PluginError(
                    f"line {node.lineno}: import from {node.module or '.'!r} is not allowed "
                    f"(allowed: {', '.join(ALLOWED_IMPORTS)})"
                )
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            raise PluginError(f"line {node.lineno}: dunder attribute {node.attr!r} is not allowed")
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


def _restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or not _allowed(name):
        raise ImportError(f"import of {name!r} is not allowed in a plug-in")
    return builtins.__import__(name, globals, locals, fromlist, level)


def load_plugin(source: str, name: str) -> Callable:
    """Statically check ``source``, execute it with restricted builtins, and return ``name``."""
    static_check(source, name)
    safe = {k: getattr(builtins, k) for k in SAFE_BUILTINS if hasattr(builtins, k)}
    safe["__import__"] = _restricted_import
    namespace: dict = {"__builtins__": safe, "__name__": "plugin"}
    try:
        exec(compile(source, f"<plugin {name}>", "exec"), namespace)  # noqa: S102 - checked source, see module doc
    except Exception as exc:  # the reason goes back to the repair loop
        raise PluginError(f"loading failed: {type(exc).__name__}: {exc}") from None
    fn = namespace.get(name)
    if not callable(fn):
        raise PluginError(f"{name!r} is not a function")
    return fn
