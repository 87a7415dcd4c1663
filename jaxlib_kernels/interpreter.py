"""An expression interpreter kernel: symbolic plug-ins as data, so a population of formulas is one compiled program.

A tree of :mod:`jaxlib_kernels.symbolic` is compiled (on the host) to a fixed-length postfix program: an opcode
array and a constant array of length ``L`` (``Program``). One jitted, differentiable stack machine
(:func:`run`) evaluates any such program on ``(ratio, advantage, progress)``: a loop over the instructions (up
to the program's last one: the padding is not run) whose carry is a stack of ``DEPTH`` arrays of the ratio's
shape; each step computes every operator's result on the top of the stack and keeps the opcode's one
(``jnp.select``), then shifts the stack by the opcode's arity. The opcodes and constants are ordinary arrays, so
``jit(vmap(train))`` over candidates x seeds compiles once per (configuration, population size, ``L``) however
different the formulas are, and the constants can be tuned by gradient or ES inside the same compiled call.

Derivatives are forward-mode (a custom JVP): the interpreter is elementwise, so its derivative in the ratio is the
diagonal that one forward pass with a tangent of ones computes beside the value, and reverse mode only multiplies
by it. Differentiating the stack machine in reverse instead (storing every step's stack and running the loop
backwards) made PPO's gradient step 9x dearer than this (measured in ``benchmarks/discovery.py``'s notes).

Semantics match :func:`symbolic.to_source_expr` operator for operator (the same ``jax.nn.relu``, ``jnp.clip``
as ``maximum`` then ``minimum``, ``jnp.where(x >= 0, a, b)``, constants rounded to 6 decimals as the rendered
source writes them), so values and gradients equal the rendered source's (``tests/kernels/test_interpreter.py``).
Every branch of the select is finite where its inputs are, and an unselected branch gets a zero cotangent, so
the interpreter adds no NaN to a gradient that the rendered source does not have.
"""

from __future__ import annotations

import ast
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels import exported, symbolic

DEPTH = 8  # stack depth: enough for any tree whose postfix evaluation needs at most 8 live values
LENGTHS = (32, 64, 128)  # program lengths: a program is padded to the smallest that holds it (few shapes)

NOP = 0
VARS = ("r", "A", "logr", "omr", "p", "z")
UNARY_OPS = ("relu", "abs", "neg", "sq", "tanh", "logsig", "sig", "expneg")
BINARY_OPS = ("add", "sub", "mul", "max", "min")
TERNARY_OPS = ("clip", "ifpos")
OPCODES = ("nop", *VARS, "const", *UNARY_OPS, *BINARY_OPS, *TERNARY_OPS)
CODE = {name: i for i, name in enumerate(OPCODES)}
CONST = CODE["const"]
_PUSH = range(CODE["r"], CONST + 1)
_UNARY = range(CODE["relu"], CODE["expneg"] + 1)
_BINARY = range(CODE["add"], CODE["min"] + 1)
_TERNARY = range(CODE["clip"], CODE["ifpos"] + 1)

# A language: the variables (and the inputs they are computed from) and operators one kind of plug-in's trees use.
# ``drift``: lpo's and marl's drift(ratio, advantage, progress); ``preference``: dpo's loss in z = beta * rho. A
# program of one language runs only that language's operators (a step computes only those), so adding a language
# costs the others nothing.
LANGUAGES = {
    "drift": (("r", "A", "logr", "omr", "p"), ("relu", "abs", "neg", "sq", "tanh")),
    "preference": (("z",), ("relu", "abs", "neg", "sq", "tanh", "logsig", "sig", "expneg")),
}


class Program(NamedTuple):
    """A postfix program: ``ops`` (L,) int32 opcodes (``OPCODES``), ``consts`` (L,) float32 (used by ``const``)."""

    ops: jax.Array | np.ndarray
    consts: jax.Array | np.ndarray


exported.register_namedtuple(Program)  # a program is an input of exported kernels (jaxlib_kernels/exported.py)

class ProgramError(ValueError):
    """An expression that does not fit the interpreter (too long or too deep)."""


def _language(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if language not in LANGUAGES:
        raise ProgramError(f"no interpreter language {language!r} ({', '.join(LANGUAGES)})")
    variables, unary = LANGUAGES[language]
    return variables, (*unary, *BINARY_OPS, *TERNARY_OPS)


def postfix(expr: symbolic.Expr, language: str = "drift") -> list[tuple[str, float]]:
    """The tree in postfix order as (opcode name, constant) pairs; children left to right, then the operator."""
    variables, ops = _language(language)
    if isinstance(expr, bool):
        raise ProgramError("booleans are not expressions")
    if isinstance(expr, (int, float)):
        return [("const", float(round(float(expr), 6)))]
    if isinstance(expr, str):
        if expr not in variables:
            raise ProgramError(f"variable {expr!r} is not one of the {language} language's {variables}")
        return [(expr, 0.0)]
    op, *args = expr
    if op not in ops:
        raise ProgramError(f"operator {op!r} is not one the interpreter runs in the {language} language "
                           f"({', '.join(ops)})")
    return [item for a in args for item in postfix(a, language)] + [(op, 0.0)]


def stack_depth(code: list[tuple[str, float]]) -> int:
    """The most values live on the stack while the program runs."""
    depth = most = 0
    for name, _ in code:
        c = CODE[name]
        depth += 1 if c in _PUSH else -1 if c in _BINARY else -2 if c in _TERNARY else 0
        most = max(most, depth)
    return most


def length_of(expr: symbolic.Expr) -> int:
    """The program length (one of ``LENGTHS``) that holds ``expr``."""
    n = symbolic.size(expr)
    for length in LENGTHS:
        if n <= length:
            return length
    raise ProgramError(f"expression of {n} nodes is longer than the interpreter's {LENGTHS[-1]} instructions")


def fits(expr: symbolic.Expr, language: str = "drift") -> bool:
    """Whether the interpreter can run ``expr`` (valid, short enough, shallow enough)."""
    try:
        encode(expr, language=language)
    except (ProgramError, symbolic.ExpressionError):
        return False
    return True


def encode(expr: symbolic.Expr, length: int | None = None, language: str = "drift") -> Program:
    """Compile a tree of ``language`` (``LANGUAGES``) to a padded postfix :class:`Program` of ``length``
    instructions (default: ``length_of``)."""
    symbolic.validate(expr, {v: (v, v) for v in _language(language)[0]})
    code = postfix(expr, language)
    length = length or length_of(expr)
    if len(code) > length:
        raise ProgramError(f"expression of {len(code)} nodes does not fit {length} instructions")
    if stack_depth(code) > DEPTH:
        raise ProgramError(f"expression needs a stack of {stack_depth(code)} values, the interpreter has {DEPTH}")
    ops = np.zeros(length, np.int32)
    consts = np.zeros(length, np.float32)
    for i, (name, c) in enumerate(code):
        ops[i], consts[i] = CODE[name], c
    return Program(ops, consts)


def encode_population(exprs: list[symbolic.Expr], length: int | None = None, language: str = "drift") -> Program:
    """Stack the programs of several trees, padded to one length (default: the longest one's): (N, L) arrays."""
    length = length or max(length_of(e) for e in exprs)
    programs = [encode(e, length, language) for e in exprs]
    return Program(np.stack([p.ops for p in programs]), np.stack([p.consts for p in programs]))


def decode(program: Program) -> symbolic.Expr:
    """The tree of a (single) program: the inverse of :func:`encode` (constants as float32 values)."""
    stack: list = []
    for op, c in zip(np.asarray(program.ops).tolist(), np.asarray(program.consts).tolist(), strict=True):
        name = OPCODES[op]
        if op == NOP:
            continue
        if name == "const":
            stack.append(float(round(c, 6)))
        elif name in VARS:
            stack.append(name)
        else:
            arity = 1 if op in _UNARY else 2 if op in _BINARY else 3
            args = stack[-arity:]
            del stack[-arity:]
            stack.append([name, *args])
    if len(stack) != 1:
        raise ProgramError(f"program leaves {len(stack)} values on the stack")
    return stack[0]


def _unary(name: str, x: jax.Array) -> jax.Array:
    return {"relu": jax.nn.relu, "abs": jnp.abs, "neg": jnp.negative, "sq": jnp.square, "tanh": jnp.tanh,
            "logsig": lambda v: jax.nn.softplus(-v), "sig": jax.nn.sigmoid, "expneg": lambda v: jnp.exp(-v)}[name](x)


def _step(language: str, variables: dict[str, jax.Array], stack: jax.Array, op: jax.Array, const: jax.Array
          ) -> jax.Array:
    """One instruction on the stack (DEPTH, *shape): every operator of the language computed, the opcode's kept."""
    names, ops = _language(language)
    x0, x1, x2 = stack[0], stack[1], stack[2]
    binary = {"add": lambda: x1 + x0, "sub": lambda: x1 - x0, "mul": lambda: x1 * x0,
              "max": lambda: jnp.maximum(x1, x0), "min": lambda: jnp.minimum(x1, x0),
              "clip": lambda: jnp.minimum(x0, jnp.maximum(x1, x2)),  # clip(x2, lo=x1, hi=x0), as jnp.clip computes it
              "ifpos": lambda: jnp.where(x2 >= 0, x1, x0)}  # ifpos(x2, x1, x0)
    branches = [(CODE[v], variables[v]) for v in names]
    branches.append((CONST, jnp.broadcast_to(const, x0.shape).astype(x0.dtype)))
    branches += [(CODE[o], binary[o]() if o in binary else _unary(o, x0)) for o in ops]
    top = jnp.select([op == code for code, _ in branches], [value for _, value in branches], x0)  # nop: x0
    zeros = jnp.zeros_like(stack[:2])
    shifted = jnp.select(
        [(op >= _PUSH.start) & (op < _PUSH.stop), (op >= _BINARY.start) & (op < _BINARY.stop), op >= _TERNARY.start],
        [stack[:-1], jnp.concatenate([stack[2:], zeros[:1]]), jnp.concatenate([stack[3:], zeros])],
        stack[1:],  # nop and unary keep the rest of the stack
    )
    return jnp.concatenate([top[None], shifted])


def _last(ops: jax.Array) -> jax.Array:
    """One past the program's last non-``nop`` instruction (its padding is never run)."""
    return jnp.max(jnp.where(ops != NOP, jnp.arange(1, ops.shape[0] + 1), 0))


def _variables(language: str, inputs: tuple[jax.Array, ...]) -> dict[str, jax.Array]:
    """The language's variables from its inputs: drift (ratio, advantage, progress); preference (z,)."""
    if language == "drift":
        r, a, p = inputs
        return {"r": r, "A": a, "logr": jnp.log(r), "omr": 1.0 - r, "p": p}
    (z,) = inputs
    return {"z": z}


def _scan(language: str, ops, consts, *inputs) -> jax.Array:
    """Every instruction, padding included, as a ``lax.scan``: reverse-differentiable in every input."""
    variables = _variables(language, inputs)

    def body(stack, instruction):
        op, const = instruction
        return _step(language, variables, stack, op, const), None

    stack, _ = jax.lax.scan(body, jnp.zeros((DEPTH, *inputs[0].shape), inputs[0].dtype), (ops, consts))
    return stack[0]


def _loop(language: str, ops, consts, *inputs) -> jax.Array:
    """The instructions up to the last non-``nop`` one, as a ``lax.while_loop`` (forward-differentiable only)."""
    variables = _variables(language, inputs)
    last = _last(ops)

    def body(carry):
        i, stack = carry
        return i + 1, _step(language, variables, stack, ops[i], consts[i])

    _, stack = jax.lax.while_loop(lambda carry: carry[0] < last, body,
                                  (jnp.int32(0), jnp.zeros((DEPTH, *inputs[0].shape), inputs[0].dtype)))
    return stack[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _evaluate(language: str, ops, consts, *inputs) -> jax.Array:
    return _loop(language, ops, consts, *inputs)


def _evaluate_jvp(language, primals, tangents):
    """The interpreter is elementwise, so its derivative in an input is a diagonal: one forward-mode pass of the
    loop (tangent of ones) per input whose tangent is not zero, times that tangent. The output tangent is then a
    product of a primal value and the input tangent, which reverse mode transposes with no loop to run backwards
    (PPO differentiates only in ``r``: one forward pass carrying value and derivative, about 9x cheaper than the
    reverse pass of the scan it replaces; ``benchmarks/discovery.py``). A tangent of the constants (tuning them by
    gradient) differentiates the scan form instead, which reverse mode handles as usual."""
    ops, consts, *inputs = primals
    _, d_consts, *d_inputs = tangents
    zero = jax.custom_derivatives.SymbolicZero
    if not isinstance(d_consts, zero):
        dense = [jnp.zeros_like(x) if isinstance(t, zero) else t for x, t in zip(inputs, d_inputs, strict=True)]
        return jax.jvp(functools.partial(_scan, language), tuple(primals),
                       (np.zeros(ops.shape, jax.dtypes.float0), d_consts, *dense))
    value, tangent = None, jnp.zeros_like(inputs[0])
    for k, d in enumerate(d_inputs):
        if isinstance(d, zero):
            continue

        def along(x, k=k):
            return _loop(language, ops, consts, *inputs[:k], x, *inputs[k + 1:])

        value, partial = jax.jvp(along, (inputs[k],), (jnp.ones_like(inputs[k]),))
        tangent = tangent + partial * d
    return (_loop(language, ops, consts, *inputs) if value is None else value), tangent


_evaluate.defjvp(_evaluate_jvp, symbolic_zeros=True)


def run(program: Program, ratio: jax.Array, advantage: jax.Array, progress: jax.Array) -> jax.Array:
    """A drift program's value at ``(ratio, advantage, progress)``, of the broadcast shape of ratio and advantage.

    Runs the instructions up to the program's last one (a population under ``vmap`` runs as many as its longest
    member has; padding costs nothing), and is differentiable in the ratio, the advantage, the progress (forward
    passes, see ``_evaluate_jvp``) and the constants."""
    ratio = jnp.asarray(ratio)
    dtype = jnp.result_type(ratio.dtype, jnp.float32)
    shape = jnp.broadcast_shapes(jnp.shape(ratio), jnp.shape(advantage))
    r = jnp.broadcast_to(ratio, shape).astype(dtype)
    a = jnp.broadcast_to(jnp.asarray(advantage, dtype), shape)
    p = jnp.broadcast_to(jnp.asarray(progress, dtype), shape)
    return _evaluate("drift", jnp.asarray(program.ops, jnp.int32), jnp.asarray(program.consts, dtype), r, a, p)


def run_preference(program: Program, z: jax.Array) -> jax.Array:
    """A preference-loss program's (the ``preference`` language, dpo's trees in ``z = beta * rho``) value at ``z``;
    differentiable in ``z`` and the constants as :func:`run`."""
    z = jnp.asarray(z)
    z = z.astype(jnp.result_type(z.dtype, jnp.float32))
    return _evaluate("preference", jnp.asarray(program.ops, jnp.int32), jnp.asarray(program.consts, z.dtype), z)


def drift_of(program: Program):
    """A drift ``(ratio, advantage, progress) -> array`` that runs ``program`` (traced or concrete)."""

    def drift(ratio, advantage, progress):
        return run(program, ratio, advantage, progress)

    return drift


def preference_loss_of(program: Program):
    """A preference loss ``(rho, beta) -> per-pair loss`` that runs ``program`` on ``z = beta * rho``."""

    def preference_loss(rho, beta):
        return run_preference(program, beta * rho)

    return preference_loss


def train_population(compiled_of, programs: Program, keys: jax.Array, params, per_candidate=None) -> dict:
    """Train (C, L) ``programs`` on S seeds in one compiled call over C x S members; host metrics (C, S, ...).

    ``keys`` (S, ...) and ``params`` (a tree of (S, ...) arrays) are the seeds' own, so candidate ``c`` on seed
    ``s`` starts where a one-candidate run on seed ``s`` starts; ``compiled_of(size, length)`` gives the compiled
    ``train(keys, params, program)`` of a population of that size and program length (the kernel's cached jit),
    or ``train(keys, params, program, values)`` with ``per_candidate`` (a tree of (C, ...) arrays: each candidate's
    values, e.g. its hyperparameters, laid out per member like the programs).
    The PPO and IPPO kernels share this stacking; a candidate's result does not depend on the others in its
    population (up to float summation order).
    """
    n_seeds = keys.shape[0]
    member, tile = population_members(programs, n_seeds)
    n_cand, length = np.shape(programs.ops)
    args = (tile(keys), jax.tree_util.tree_map(tile, params), member)
    if per_candidate is not None:
        args += (jax.tree_util.tree_map(lambda x: jnp.asarray(np.repeat(np.asarray(x), n_seeds, axis=0)),
                                        per_candidate),)
    out = compiled_of(n_cand * n_seeds, length)(*args)
    return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((n_cand, n_seeds) + x.shape[1:]), out["metrics"])


def population_members(programs: Program, n_seeds: int):
    """The C x S members of (C, L) ``programs`` on S seeds, member ``c * S + s`` being candidate ``c`` on seed
    ``s``: their (C * S, L) programs, and ``tile(x)`` that lays a seed-indexed array (S, ...) out the same way."""
    ops, consts = np.asarray(programs.ops, np.int32), np.asarray(programs.consts, np.float32)
    if ops.ndim != 2 or ops.shape != consts.shape:
        raise ValueError(f"programs are (candidates, length) arrays, got {ops.shape} and {consts.shape}")
    n_cand = ops.shape[0]

    def tile(x):
        return jnp.tile(x, (n_cand,) + (1,) * (x.ndim - 1))

    member = Program(jnp.asarray(np.repeat(ops, n_seeds, axis=0)), jnp.asarray(np.repeat(consts, n_seeds, axis=0)))
    return member, tile


# --- recognising rendered sources -------------------------------------------------------------------------------

_CALLS = {
    ("jax", "nn", "relu"): "relu", ("jnp", "abs"): "abs", ("jnp", "square"): "sq", ("jnp", "tanh"): "tanh",
    ("jnp", "maximum"): "max", ("jnp", "minimum"): "min", ("jnp", "clip"): "clip", ("jnp", "where"): "ifpos",
    ("jnp", "log"): "log",
}
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul"}


class _NotRendered(Exception):
    pass


def _dotted(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (*_dotted(node.value), node.attr)
    raise _NotRendered


def _tree(node: ast.AST, args: tuple[str, str, str]) -> symbolic.Expr:
    ratio, advantage, progress = args
    if isinstance(node, ast.Constant) and isinstance(node.value, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        if isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, float):
            return -node.operand.value
        return ["neg", _tree(node.operand, args)]
    if isinstance(node, ast.Name):
        names = {ratio: "r", advantage: "A", progress: "p"}
        if node.id in names:
            return names[node.id]
        raise _NotRendered
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        if (isinstance(node.op, ast.Sub) and isinstance(node.left, ast.Constant) and node.left.value == 1.0
                and isinstance(node.right, ast.Name) and node.right.id == ratio):
            return "omr"
        return [_BINOPS[type(node.op)], _tree(node.left, args), _tree(node.right, args)]
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.GtE):
        return _tree(node.left, args)  # the condition of ifpos, checked by the round trip
    if isinstance(node, ast.Call) and not node.keywords:
        name = _CALLS.get(_dotted(node.func))
        if name is None:
            raise _NotRendered
        if name == "log":
            if len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id == ratio:
                return "logr"
            raise _NotRendered
        return [name, *[_tree(a, args) for a in node.args]]
    raise _NotRendered


def expression_of_source(source: str, name: str = "drift") -> symbolic.Expr | None:
    """The tree whose :func:`symbolic.render_source` is ``source`` (any docstring, same syntax tree), else None.

    Only a source that the renderer wrote (up to parentheses and layout) is recognised, so running its tree through
    the interpreter computes what the source computes; anything else (an LLM-written plug-in) gives None.
    """
    try:
        module = ast.parse(source)
        fn = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == name)
        args = tuple(a.arg for a in fn.args.args)
        if len(args) != 3:
            return None
        doc = ast.get_docstring(fn, clean=False)
        ret = fn.body[-1]
        if not (isinstance(ret, ast.Return) and isinstance(ret.value, ast.BinOp)):
            return None
        expr = _tree(ret.value.left, args)
        # the same syntax tree as the renderer's text (ast drops only parentheses, which the renderer adds around
        # every operation, and "-c" is the same number as "(-c)"): the source computes what the tree computes
        if ast.dump(module) != ast.dump(ast.parse(symbolic.render_source(expr, name, doc=doc, args=args))):
            return None
        encode(expr)
    except (_NotRendered, StopIteration, SyntaxError, symbolic.ExpressionError, ProgramError, KeyError, TypeError,
            ValueError, RecursionError):
        return None
    return symbolic.canonical(expr)


@functools.lru_cache(maxsize=4096)
def _cached_expression_json(source: str, name: str) -> str | None:
    expr = expression_of_source(source, name)
    return None if expr is None else symbolic.dumps(expr)


def expression_of(drift) -> symbolic.Expr | None:
    """The tree a drift computes, where it is known: ``drift.__expression__`` (set by :func:`with_expression`), or
    the source of a loaded plug-in (``jaxlib_kernels.plugin.load_plugin`` keeps it) when the renderer wrote it.
    None for anything else, which then runs as its own compiled program."""
    expr = getattr(drift, "__expression__", None)
    if expr is not None:
        return expr if fits(expr) else None
    source = getattr(drift, "__plugin_source__", None)
    if isinstance(source, str):
        text = _cached_expression_json(source, getattr(drift, "__name__", "drift"))
        return None if text is None else symbolic.loads(text)
    return None


def with_expression(expr: symbolic.Expr):
    """A drift callable (the interpreter running ``expr``) that ``expression_of`` recognises."""
    program = encode(expr)

    def drift(ratio, advantage, progress):
        return run(program, ratio, advantage, progress)

    drift.__expression__ = symbolic.canonical(expr)
    return drift
