"""The ``dpo`` template's evaluation kernel: preference optimisation of a tiny causal transformer LM, all in JAX.

A small analogue of DiscoPOP's IMDb experiment (Lu et al., 2024, section 5), which follows DPO's (Rafailov et
al., 2023): a language model is first fine-tuned (SFT) on the task's text, preference pairs are sampled from it
and labelled by a known reward (there a sentiment classifier), and the policy is trained from the SFT model with
the preference loss against the frozen SFT reference; the outcome is the reward of the policy's samples and its
KL divergence from the reference, over a sweep of beta.

Here the "text" is sequences of a fixed random Markov chain over a small vocabulary (``prompt_len`` prompt tokens,
``completion_len`` completion tokens), the model is a causal transformer (flax.linen) of some ten thousand
parameters, and the reward is a deterministic scorer of the completion: ``unigram`` (the mean of a fixed value in
[0, 1] per token, the stand-in for sentiment) or ``bigram`` (the fraction of steps that count up by one modulo the
vocabulary). Pairs: two completions of a prompt sampled from the SFT model, the first preferred with probability
``sigmoid(bt_scale * (r_1 - r_2))`` (Bradley-Terry). Training: Adam with global-norm clipping on minibatches of
pairs; every ``steps / checkpoints`` steps the policy samples completions of held-aside prompts, and the mean
reward and KL(policy || reference) on those samples (the exact per-token KL summed over the completion, so it is
never negative) are recorded.

One compiled call trains every seed and every beta of the setting's sweep (``vmap`` over members, a member being a
seed or a candidate on a seed, of ``vmap`` over betas), with ``lr`` and ``max_grad_norm`` (:data:`TRACED`) per-member
values, not constants: one compiled training per (configuration without them, loss, members, program length). The
loss is a plug-in (one program per source text) or, for a population (a tree stage's nodes, the discovery engine's
fitness, and a unit whose loss the preference language rendered), each member's interpreted program
(:mod:`jaxlib_kernels.interpreter`), so that every tree of a program length shares one compiled training. That
program (and a plug-in's, keyed by its source), the data's and the measurement's are traced once across processes
(:mod:`jaxlib_kernels.exported`). The SFT
model is trained once per setting (it depends only on the task and the model) and cached, in
memory and on disk (``$DPO_CACHE_DIR``, default ``.cache/dpo`` in the repository), since every candidate of a
setting starts from it.

The headline value per seed is the KL-penalised reward ``mean over the beta sweep of (reward - kl_coef * KL)``:
reward bought with KL counts only net of its KL cost, so a loss that drifts far from the reference for a little
reward scores worse, as the paper's reward/KL frontier shows.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlib_kernels import exported
from jaxlib_kernels.hashing import ROOT

BETAS = (0.025, 0.05, 0.1, 0.25)


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """The language model and the sequence format."""

    vocab: int = 8
    prompt_len: int = 2
    completion_len: int = 6
    d_model: int = 32
    layers: int = 2
    heads: int = 2
    mlp: int = 64

    @property
    def length(self) -> int:
        return self.prompt_len + self.completion_len


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The synthetic text (a Markov chain), the reward and the SFT training of the reference model."""

    reward: str = "unigram"  # "unigram" | "bigram"
    task_seed: int = 0
    chain_temperature: float = 1.5  # scale of the chain's logits: larger = more predictable text
    sft_steps: int = 300
    sft_batch: int = 64
    sft_lr: float = 3e-3


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """One unit's configuration: model, task, the preference data and the policy training."""

    lm: LMConfig = LMConfig()
    task: TaskConfig = TaskConfig()
    betas: tuple[float, ...] = BETAS
    kl_coef: float = 0.1
    bt_scale: float = 10.0
    num_pairs: int = 256
    batch_pairs: int = 32
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    steps: int = 64
    checkpoints: int = 4
    eval_samples: int = 128

    @property
    def steps_per_checkpoint(self) -> int:
        return max(1, self.steps // self.checkpoints)


class TinyLM(nn.Module):
    """A pre-norm causal transformer over token ids ``(..., L) -> logits (..., L, vocab)``."""

    cfg: LMConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        c = self.cfg
        x = nn.Embed(c.vocab, c.d_model)(tokens)
        x = x + self.param("pos", nn.initializers.normal(0.02), (c.length, c.d_model))[: tokens.shape[-1]]
        mask = jnp.tril(jnp.ones((tokens.shape[-1], tokens.shape[-1]), bool))
        for _ in range(c.layers):
            h = nn.LayerNorm()(x)
            q, k, v = jnp.split(nn.Dense(3 * c.d_model, use_bias=False)(h).reshape(
                *h.shape[:-1], 3 * c.heads, c.d_model // c.heads), 3, axis=-2)
            att = jnp.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(c.d_model // c.heads)
            att = jax.nn.softmax(jnp.where(mask, att, -1e9), axis=-1)
            x = x + nn.Dense(c.d_model)(jnp.einsum("...hqk,...khd->...qhd", att, v).reshape(h.shape))
            h = nn.LayerNorm()(x)
            x = x + nn.Dense(c.d_model)(nn.gelu(nn.Dense(c.mlp)(h)))
        return nn.Dense(c.vocab)(nn.LayerNorm()(x))


def num_params(params) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


# ---- the task: text, reward ------------------------------------------------------------------------------------


def task_arrays(lm: LMConfig, task: TaskConfig) -> dict[str, np.ndarray]:
    """The Markov chain (initial and transition log-probabilities) and the per-token values of the task."""
    rng = np.random.default_rng(task.task_seed)
    init = rng.normal(size=lm.vocab)
    trans = task.chain_temperature * rng.normal(size=(lm.vocab, lm.vocab))
    log_softmax = lambda a: a - np.log(np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)) - a.max(
        -1, keepdims=True)
    values = rng.permutation(np.linspace(0.0, 1.0, lm.vocab))
    return {"init": log_softmax(init).astype(np.float32), "trans": log_softmax(trans).astype(np.float32),
            "values": values.astype(np.float32)}


def sample_chain(arrays: dict, key: jax.Array, n: int, length: int) -> jax.Array:
    """``n`` sequences of the Markov chain, ``(n, length)`` int32."""
    k0, k1 = jax.random.split(key)
    first = jax.random.categorical(k0, jnp.broadcast_to(arrays["init"], (n, arrays["init"].shape[0])))

    def step(tok, k):
        nxt = jax.random.categorical(k, arrays["trans"][tok])
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, jax.random.split(k1, length - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1).astype(jnp.int32)


def reward(lm: LMConfig, task: TaskConfig, arrays: dict, tokens: jax.Array) -> jax.Array:
    """The known reward of each sequence's completion, in [0, 1]: ``(..., L) -> (...)``."""
    completion = tokens[..., lm.prompt_len:]
    if task.reward == "unigram":
        return jnp.mean(arrays["values"][completion], axis=-1)
    if task.reward == "bigram":
        seq = tokens[..., lm.prompt_len - 1:]
        return jnp.mean(((seq[..., 1:] - seq[..., :-1]) % lm.vocab == 1).astype(jnp.float32), axis=-1)
    raise ValueError(f"unknown reward {task.reward!r} (known: unigram, bigram)")


# ---- the model's sequences --------------------------------------------------------------------------------------


def _log_probs(model: TinyLM, params, tokens: jax.Array) -> jax.Array:
    """Next-token log-probabilities ``(B, L - 1, V)``: entry j predicts token j + 1."""
    return jax.nn.log_softmax(model.apply(params, tokens)[:, :-1], axis=-1)


def completion_logp(model: TinyLM, params, tokens: jax.Array) -> jax.Array:
    """log p(completion | prompt) of each sequence ``(B, L) -> (B,)``."""
    lm = model.cfg
    lp = _log_probs(model, params, tokens)
    tok = jnp.take_along_axis(lp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(tok[:, lm.prompt_len - 1:], axis=-1)


def sample(model: TinyLM, params, prompts: jax.Array, key: jax.Array) -> jax.Array:
    """Completions of ``prompts (B, P)`` sampled at temperature 1: full sequences ``(B, L)``."""
    lm = model.cfg
    tokens = jnp.zeros((prompts.shape[0], lm.length), jnp.int32).at[:, : lm.prompt_len].set(prompts)

    def step(tokens, xs):
        t, k = xs
        logits = jax.lax.dynamic_index_in_dim(model.apply(params, tokens), t - 1, axis=1, keepdims=False)
        return tokens.at[:, t].set(jax.random.categorical(k, logits).astype(jnp.int32)), None

    steps = jnp.arange(lm.prompt_len, lm.length)
    tokens, _ = jax.lax.scan(step, tokens, (steps, jax.random.split(key, lm.completion_len)))
    return tokens


def sequence_kl(model: TinyLM, params, ref_params, tokens: jax.Array) -> jax.Array:
    """KL(policy || reference) along each sampled sequence: the exact per-token KL summed over the completion."""
    lm = model.cfg
    lp, lq = _log_probs(model, params, tokens), _log_probs(model, ref_params, tokens)
    per_token = jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    return jnp.sum(per_token[:, lm.prompt_len - 1:], axis=-1)


# ---- SFT: the reference model, once per setting -----------------------------------------------------------------


def _sft_train(lm: LMConfig, task: TaskConfig):
    model = TinyLM(lm)
    arrays = {k: jnp.asarray(v) for k, v in task_arrays(lm, task).items()}
    params = model.init(jax.random.key(task.task_seed), jnp.zeros((1, lm.length), jnp.int32))
    opt = optax.adam(task.sft_lr)

    @jax.jit
    def run(params, key):
        def step(carry, k):
            params, state = carry
            tokens = sample_chain(arrays, k, task.sft_batch, lm.length)

            def loss(p):
                lp = _log_probs(model, p, tokens)
                return -jnp.mean(jnp.take_along_axis(lp, tokens[:, 1:, None], axis=-1))

            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, task.sft_steps))
        return params, losses

    params, losses = run(params, jax.random.key(1000 + task.task_seed))
    return jax.device_get(params), np.asarray(losses)


def _cache_dir() -> Path:
    return Path(os.environ.get("DPO_CACHE_DIR") or ROOT / ".cache" / "dpo")


@functools.lru_cache(maxsize=16)
def sft_params(lm: LMConfig, task: TaskConfig):
    """The SFT (reference) parameters of a task and model: trained once, then read from memory or disk."""
    template = jax.eval_shape(lambda: TinyLM(lm).init(jax.random.key(0), jnp.zeros((1, lm.length), jnp.int32)))
    treedef = jax.tree_util.tree_structure(template)
    shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), template)
    digest = hashlib.sha256(repr((lm, task, _SFT_VERSION, shapes)).encode()).hexdigest()[:16]
    path = _cache_dir() / f"sft-{digest}.npz"
    if path.exists():
        try:
            with np.load(path) as data:
                leaves = [data[f"leaf{i}"] for i in range(treedef.num_leaves)]
            return jax.tree_util.tree_unflatten(treedef, leaves)
        except (OSError, KeyError, ValueError):  # a damaged cache file is retrained and rewritten
            pass
    params, _ = _sft_train(lm, task)
    leaves = jax.tree_util.tree_leaves(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **{f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)})
    os.replace(tmp, path)
    return params


_SFT_VERSION = 1  # bump when the SFT procedure changes (the disk cache is keyed by it)


# ---- preference optimisation -------------------------------------------------------------------------------------


def _data_key(config: DPOConfig) -> DPOConfig:
    """The part of a configuration the preference data depends on (the rest is zeroed out of the cache key)."""
    return dataclasses.replace(config, betas=(), kl_coef=0.0, lr=0.0, max_grad_norm=0.0, steps=0, checkpoints=0,
                               batch_pairs=0)


@functools.lru_cache(maxsize=16)
def _data_fn(config: DPOConfig) -> Callable:
    """Preference pairs sampled from the reference and labelled Bradley-Terry, and evaluation prompts, per seed."""
    lm, task = config.lm, config.task
    model = TinyLM(lm)
    arrays = {k: jnp.asarray(v) for k, v in task_arrays(lm, task).items()}
    score = functools.partial(reward, lm, task, arrays)

    def data(ref, key):
        kp, k1, k2, kl, ke = jax.random.split(key, 5)
        prompts = sample_chain(arrays, kp, config.num_pairs, lm.length)[:, : lm.prompt_len]
        y1, y2 = sample(model, ref, prompts, k1), sample(model, ref, prompts, k2)
        first = jax.random.uniform(kl, (config.num_pairs,)) < jax.nn.sigmoid(config.bt_scale * (score(y1) - score(y2)))
        yw, yl = jnp.where(first[:, None], y1, y2), jnp.where(first[:, None], y2, y1)
        eval_prompts = sample_chain(arrays, ke, config.eval_samples, lm.length)[:, : lm.prompt_len]
        return {"yw": yw, "yl": yl, "ref_w": completion_logp(model, ref, yw), "ref_l": completion_logp(model, ref, yl),
                "prompts": eval_prompts, "ref_reward": jnp.mean(score(y1))}

    return exported.cached(jax.jit(jax.vmap(data, in_axes=(None, 0))), "dpo_data", config)


TRACED = ("lr", "max_grad_norm")  # the fields a compiled training takes as per-member values, not constants


def _train_key(config: DPOConfig) -> DPOConfig:
    """The part of a configuration the compiled training depends on: the betas, the task (its data) and the
    :data:`TRACED` hyperparameters are arguments, not constants."""
    return dataclasses.replace(config, betas=(), kl_coef=0.0, task=TaskConfig(reward=""),
                               **{name: 0.0 for name in TRACED})


def _trainer(config: DPOConfig) -> Callable:
    """``train_one(ref, data, beta, key, loss_fn, lr, max_grad_norm) -> (params at every checkpoint, mean loss per
    checkpoint)``; ``lr`` and ``max_grad_norm`` may be traced values."""
    model = TinyLM(config.lm)

    def train_one(ref, d, beta, key, loss_fn, lr, max_grad_norm):
        opt = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))

        def step(carry, k):
            params, state = carry
            idx = jax.random.randint(k, (config.batch_pairs,), 0, config.num_pairs)
            pairs = jnp.concatenate([d["yw"][idx], d["yl"][idx]])
            ref_margin = d["ref_w"][idx] - d["ref_l"][idx]

            def loss(p):
                logp = completion_logp(model, p, pairs)
                rho = logp[: config.batch_pairs] - logp[config.batch_pairs:] - ref_margin
                return jnp.mean(loss_fn(rho, beta))

            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        def chunk(carry, k):
            carry, losses = jax.lax.scan(step, carry, jax.random.split(k, config.steps_per_checkpoint))
            return carry, (carry[0], jnp.mean(losses))

        _, (params, losses) = jax.lax.scan(chunk, (ref, opt.init(ref)), jax.random.split(key, config.checkpoints))
        return params, losses

    return train_one


@dataclasses.dataclass(frozen=True)
class _Loss:
    """The loss a compiled training runs: ``fn``, or (None) every member's own interpreted program; compared by
    ``key`` alone, so that equal keys share one compiled training."""

    key: Any
    fn: Callable | None = dataclasses.field(default=None, compare=False)


_PROGRAMS = _Loss("programs")


def _loss_of(loss_fn: Callable) -> _Loss:
    """A loaded plug-in is keyed by its source (two loads of one text share a compiled training), another callable
    by itself."""
    source = getattr(loss_fn, "__plugin_source__", None)
    return _Loss((source, getattr(loss_fn, "__name__", None)) if isinstance(source, str) else loss_fn, loss_fn)


@functools.lru_cache(maxsize=64)
def _train_fn(config: DPOConfig, loss: _Loss) -> Callable:
    """Policy training from the reference, vmapped over members of vmapped betas, compiled once per shape:
    ``train(ref, data, betas, keys, lr, max_grad_norm, ops, consts) -> (params, mean loss)`` at every checkpoint.

    Member ``m`` trains on its data and key (``data``, ``keys``: (M, ...)) with its ``lr[m]`` and
    ``max_grad_norm[m]`` (traced: any values share the program) and ``loss.fn``, or where that is None its
    interpreted program (``ops[m]``, ``consts[m]``, the preference language; else both None). ``config``: a
    :func:`_train_key`. The program is traced once across processes (:mod:`jaxlib_kernels.exported`) where the loss
    is interpreted or a plug-in (keyed by its source). Measuring the parameters is :func:`_measure_fn`, which does
    not depend on the loss and so is compiled once per setting, not once per candidate.
    """
    from jaxlib_kernels import interpreter

    train_one = _trainer(config)

    def member(ref, d, betas, key, lr, max_grad_norm, ops, consts):
        loss_fn = loss.fn if loss.fn is not None else interpreter.preference_loss_of(interpreter.Program(ops, consts))
        return jax.vmap(train_one, in_axes=(None, None, 0, None, None, None, None))(
            ref, d, betas, key, loss_fn, lr, max_grad_norm)

    jitted = jax.jit(jax.vmap(member, in_axes=(None, 0, None, 0, 0, 0, 0, 0)))
    if loss.fn is None:
        return exported.cached(jitted, "dpo_programs", config)
    # a plug-in's training is kept under its source; another callable's (no source to key it by) is traced here
    return exported.cached(jitted, "dpo_source", (config, loss.key)) if isinstance(loss.key, tuple) else jitted


@functools.lru_cache(maxsize=16)
def _measure_fn(config: DPOConfig) -> Callable:
    """Mean reward and KL(policy || reference) of sampled completions, for parameters ``(S, B, T, ...)``."""
    lm, task = config.lm, config.task
    model = TinyLM(lm)
    arrays = {k: jnp.asarray(v) for k, v in task_arrays(lm, task).items()}

    def measure(params, ref, prompts, key):
        tokens = sample(model, params, prompts, key)
        return jnp.mean(reward(lm, task, arrays, tokens)), jnp.mean(sequence_kl(model, params, ref, tokens))

    # the same key for every beta and checkpoint of a seed: common random numbers
    over_checkpoints = jax.vmap(measure, in_axes=(0, None, None, None))
    over_betas = jax.vmap(over_checkpoints, in_axes=(0, None, None, None))
    return exported.cached(jax.jit(jax.vmap(over_betas, in_axes=(0, None, 0, 0))), "dpo_measure", config)


def _train(config: DPOConfig, loss: _Loss, programs, hparams: dict, seeds: list[int]) -> dict[str, np.ndarray]:
    """C candidates on every seed and beta in one compiled call: reward, KL and mean loss ``(C, S, len(betas),
    checkpoints)``, ``ref_reward (C, S)``. ``programs``: (C, L) arrays (``loss`` is :data:`_PROGRAMS`), or None for
    one candidate, ``loss``; ``hparams``: ``{name: (C,) values}`` over :data:`TRACED`. Candidate ``c`` on seed
    ``s`` meets the data, key and measurement a one-candidate run on seed ``s`` meets, so it matches that run up
    to float summation order."""
    from jaxlib_kernels import interpreter

    n_seeds = len(seeds)
    ref = sft_params(config.lm, dataclasses.replace(config.task, reward=""))  # SFT does not see the reward
    keys = jax.random.wrap_key_data(jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds]))
    k_data, k_train, k_eval = jax.vmap(functools.partial(jax.random.split, num=3), out_axes=1)(keys)
    data = _data_fn(_data_key(config))(ref, k_data)
    if programs is None:
        n_cand, ops, consts, tile = 1, None, None, lambda x: x
    else:
        member, tile = interpreter.population_members(programs, n_seeds)  # member c * S + s is seed s's
        n_cand, ops, consts = np.shape(programs.ops)[0], member.ops, member.consts
    values = {name: jnp.asarray(np.repeat(np.asarray(hparams[name], np.float32).reshape(n_cand), n_seeds))
              for name in TRACED}
    member_data = jax.tree_util.tree_map(tile, data)
    betas = jnp.asarray(config.betas, jnp.float32)
    params, losses = _train_fn(_train_key(config), loss)(
        ref, member_data, betas, tile(k_train), values["lr"], values["max_grad_norm"], ops, consts)
    r, kl = _measure_fn(_data_key(config))(params, ref, member_data["prompts"], tile(k_eval))
    out = {"reward": r, "kl": kl, "loss": losses, "ref_reward": member_data["ref_reward"]}
    return {k: np.asarray(v, dtype=np.float64).reshape((n_cand, n_seeds) + np.shape(v)[1:])
            for k, v in jax.device_get(out).items()}


def _hparams(config: DPOConfig, n: int) -> dict:
    """The configuration's :data:`TRACED` values for ``n`` candidates."""
    return {name: [getattr(config, name)] * n for name in TRACED}


@functools.lru_cache(maxsize=4096)
def _expression_json(source: str, name: str) -> str | None:
    from jaxlib_kernels import interpreter
    from jaxlib_kernels.search.preference import LANGUAGE
    from jaxlib_kernels.tree.operators import formula_of

    expr = formula_of(LANGUAGE, name, source)
    return None if expr is None or not interpreter.fits(expr, LANGUAGE.name) else json.dumps(expr)


def expression_of(loss_fn: Callable):
    """The preference-language tree a loaded loss computes, where that language rendered its source and the
    interpreter runs it; None for any other loss (a hand-written one), which is then its own compiled program."""
    source = getattr(loss_fn, "__plugin_source__", None)
    text = _expression_json(source, getattr(loss_fn, "__name__", "")) if isinstance(source, str) else None
    return None if text is None else json.loads(text)


def train_seeds(config: DPOConfig, loss_fn: Callable, seeds: list[int]) -> dict[str, np.ndarray]:
    """Train every seed and beta: reward, KL and mean loss ``(S, len(betas), checkpoints)``, ``ref_reward (S,)``.

    A loss with a tree (:func:`expression_of`) runs as its interpreted program, a population of one: every such
    loss, at any ``lr`` and ``max_grad_norm``, shares one compiled training per (configuration, number of seeds,
    program length). Any other loss is its own program, compiled once per configuration and source text, whatever
    its ``lr`` and ``max_grad_norm``."""
    from jaxlib_kernels import interpreter

    expr = expression_of(loss_fn)
    if expr is None:
        out = _train(config, _loss_of(loss_fn), None, _hparams(config, 1), seeds)
    else:
        out = _train(config, _PROGRAMS, interpreter.encode_population([expr], language="preference"),
                     _hparams(config, 1), seeds)
    return {k: v[0] for k, v in out.items()}


def train_population(config: DPOConfig, programs, hparams: dict, seeds: list[int]) -> np.ndarray:
    """The template's metric (C, S), the KL-penalised reward at the end of training, of a population of
    interpreted preference losses (``programs``: (C, L) arrays, trees in ``z = beta * rho``) on ``seeds``, candidate
    ``c`` with ``hparams[name][c]`` for every ``name`` of :data:`TRACED`: every candidate x seed x beta in one
    compiled call, one compile for any values of a (configuration, population size, program length)."""
    out = _train(config, _PROGRAMS, programs, hparams, seeds)
    return penalised(config, out["reward"], out["kl"])[..., -1]


def train_programs(config: DPOConfig, programs, seeds: list[int]) -> np.ndarray:
    """:func:`train_population` at the configuration's hyperparameters (the discovery engine's fitness)."""
    return train_population(config, programs, _hparams(config, np.shape(programs.ops)[0]), seeds)


def penalised(config: DPOConfig, reward_: np.ndarray, kl: np.ndarray) -> np.ndarray:
    """The headline value: mean over the beta axis (-2) of reward - kl_coef * KL."""
    return np.mean(reward_ - config.kl_coef * kl, axis=-2)
