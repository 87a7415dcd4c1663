"""Preference pairs per second of the ``dpo`` template's JAX preference training against Hugging Face TRL's
``DPOTrainer`` on CPU torch: the same model, preference pairs, batches, loss, optimiser and steps, in one run.

Ours: the kernel's compiled training (``kernel._train_fn``, the call ``kernel.train_seeds`` makes: every seed vmapped
in one XLA program), at 1 seed and at several seeds, on one XLA CPU device and with the seeds split over one device
per core (``jaxlib_kernels.devices.population_jit``). Peer: TRL's ``DPOTrainer`` (``loss_type="sigmoid"``, DPO) in
one process, one seed, and ``--trl-procs`` processes at once, one seed each (what TRL gets from the whole machine).

What is the same on both sides:

* The model. The LM is the template's causal transformer (``kernel.TinyLM``). On the torch side it is a transformers
  ``GPT2LMHeadModel`` of the same layers, width, heads, MLP width, vocabulary and context (``n_positions`` = prompt +
  completion), tanh GELU (``gelu_new``, flax's default ``nn.gelu``), LayerNorm epsilon 1e-6, dropout 0, with two
  changes that make it the same function and parameter set: its head is untied and has a bias (ours is a separate
  ``Dense``), and the query/key/value bias, which ours does not have, is zero and frozen (``requires_grad=False``).
  Our SFT (reference) weights are converted into it; the conversion is checked by comparing logits on a batch
  (``--logit-tol``), and the trained torch weights are converted back and checked the same way.
* The data. The preference pairs of each seed are the kernel's own (``kernel._data_fn``: completions sampled from the
  SFT model, labelled Bradley-Terry by the task's reward). TRL gets them as text over a ``tokenizers`` WordLevel
  vocabulary ``t0 ... t{V-1}`` (``PreTrainedTokenizerFast``), tokenised by TRL itself; TRL 1.x appends an EOS token
  to every completion and has no option against it, so a subclass removes that one token from the tokenised columns
  after TRL's own ``_prepare_dataset`` (the sequences stay the kernel's fixed-length token ids; asserted).
* The batches. Our kernel draws each step's ``--batch`` pair indices with ``jax.random.randint`` (with replacement);
  the same draws are reproduced here and TRL's dataset is those pairs in that order, read sequentially
  (``train_sampling_strategy="sequential"``), so both sides take the same gradient steps on the same batches.
* The loss and optimiser: DPO ``-log sigmoid(beta * rho)``, ``--beta``; Adam (torch AdamW with weight decay 0),
  learning rate 1e-3 constant, betas (0.9, 0.999), epsilon 1e-8, global-norm clipping at 1.0; float32. The reference
  log-probabilities are computed once before training on both sides (ours: in the data; TRL:
  ``precompute_ref_log_probs=True``, during the trainer's construction).
* The measurement: the trained policy (TRL's converted back to flax) is measured by the kernel's ``_measure_fn``:
  completions of the seed's held-aside prompts sampled at temperature 1 with the seed's evaluation key, their mean
  reward under the task's deterministic reward and the mean exact KL(policy || reference) summed over the
  completion. So at the same seed both sides are measured on the same prompts with the same random numbers, and the
  largest difference between the two sides' trained weights is reported.

Timing. Ours: ``lower().compile()`` timed apart as compile; the first run after compiling and ``--repeats`` more,
our peers interleaved, median. TRL: the trainer's construction (tokenising, the reference log-probabilities) is
reported apart as setup; its run time is its training loop, from ``on_train_begin`` to ``on_train_end`` (the whole
``train()`` call is kept too), median of ``--trl-repeats`` + 1 fresh trainers; reporting, logging, saving and
progress bars are off. Pairs/s = seeds x steps x batch / run time. TRL in N processes at once: all pairs over the
slowest loop, each process with one torch thread, started together after their setup (a barrier).

    .venv/bin/python benchmarks/dpo.py            # the comparison (defaults)
    .venv/bin/python benchmarks/dpo.py --quick    # tiny sizes (the tests use it)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# devices first: --devices must reach XLA before JAX makes its backends (importing jax does not make them)
import common

from jaxlib_kernels import devices

if __name__ == "__main__":
    devices.force_cpu_devices(common.early_devices(sys.argv[1:]))

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels.templates.dpo import kernel
from jaxlib_kernels.templates.dpo.unit import SMALL, WIDE

OURS_ONE = "ours (dpo kernel), one device"
OURS_SPLIT = "ours (dpo kernel), seeds over {n} devices"
TRL_ONE = "TRL DPOTrainer (torch CPU), one process"
TRL_PAR = "TRL DPOTrainer, {n} processes at once"  # one torch thread each
TARGET = 10.0  # issue 12: ours at least 10x TRL's pairs/s
LMS = {"small": SMALL, "wide": WIDE}
VERSIONS = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers", "trl", "datasets", "accelerate",
            "tokenizers")


# ---- the setting and the data (the kernel's own) ---------------------------------------------------------------


def make_config(lm_name: str, steps: int, pairs: int, batch: int, beta: float, eval_samples: int) -> kernel.DPOConfig:
    return kernel.DPOConfig(lm=LMS[lm_name], task=kernel.TaskConfig(reward="unigram"), betas=(beta,), steps=steps,
                            checkpoints=min(4, steps), num_pairs=pairs, batch_pairs=batch, eval_samples=eval_samples)


def total_steps(config: kernel.DPOConfig) -> int:
    return config.checkpoints * config.steps_per_checkpoint  # the steps the kernel takes


def seed_inputs(config: kernel.DPOConfig, ref, seeds: list[int]) -> dict:
    """What ``kernel.train_seeds`` computes before training: per-seed keys and preference data."""
    keys = jax.random.wrap_key_data(jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds]))
    k_data, k_train, k_eval = jax.vmap(functools.partial(jax.random.split, num=3), out_axes=1)(keys)
    data = jax.block_until_ready(kernel._data_fn(kernel._data_key(config))(ref, k_data))
    return {"data": data, "k_train": k_train, "k_eval": k_eval}


def batch_indices(config: kernel.DPOConfig, k_train) -> np.ndarray:
    """The pair indices ``kernel._train_fn`` draws at every step, ``(S, steps, batch)``: the same key splits."""

    def per_seed(key):
        def chunk(k):
            return jax.vmap(lambda ks: jax.random.randint(ks, (config.batch_pairs,), 0, config.num_pairs))(
                jax.random.split(k, config.steps_per_checkpoint))

        return jax.vmap(chunk)(jax.random.split(key, config.checkpoints)).reshape(-1, config.batch_pairs)

    return np.asarray(jax.jit(jax.vmap(per_seed))(k_train))


def measure(config: kernel.DPOConfig, final_params, ref, inputs: dict, which: list[int]) -> tuple[np.ndarray, ...]:
    """Reward and KL(policy || reference) per seed of trained parameters ``(S, ...)``, by the kernel's measurement."""
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[:, None, None], final_params)  # (S, betas=1, T=1, ...)
    prompts, k_eval = inputs["data"]["prompts"][np.asarray(which)], inputs["k_eval"][np.asarray(which)]
    r, kl = kernel._measure_fn(kernel._data_key(config))(params, ref, prompts, k_eval)
    return np.asarray(r, np.float64)[:, 0, 0], np.asarray(kl, np.float64)[:, 0, 0]


# ---- the torch model: GPT-2 of the same shape, weights converted both ways ---------------------------------------


def _layout(lm: kernel.LMConfig) -> list[tuple[str, tuple[str, ...], bool]]:
    """(torch name, flax path, transpose) of every converted tensor. flax names the Dense layers of a block in the
    order ``TinyLM`` constructs them: qkv, attention output, MLP output (constructed before its input), MLP input."""
    out = [("transformer.wte.weight", ("Embed_0", "embedding"), False), ("transformer.wpe.weight", ("pos",), False)]
    for i in range(lm.layers):
        h = f"transformer.h.{i}."
        out += [(h + "ln_1.weight", (f"LayerNorm_{2 * i}", "scale"), False),
                (h + "ln_1.bias", (f"LayerNorm_{2 * i}", "bias"), False),
                (h + "attn.c_attn.weight", (f"Dense_{4 * i}", "kernel"), False),
                (h + "attn.c_proj.weight", (f"Dense_{4 * i + 1}", "kernel"), False),
                (h + "attn.c_proj.bias", (f"Dense_{4 * i + 1}", "bias"), False),
                (h + "ln_2.weight", (f"LayerNorm_{2 * i + 1}", "scale"), False),
                (h + "ln_2.bias", (f"LayerNorm_{2 * i + 1}", "bias"), False),
                (h + "mlp.c_fc.weight", (f"Dense_{4 * i + 3}", "kernel"), False),
                (h + "mlp.c_fc.bias", (f"Dense_{4 * i + 3}", "bias"), False),
                (h + "mlp.c_proj.weight", (f"Dense_{4 * i + 2}", "kernel"), False),
                (h + "mlp.c_proj.bias", (f"Dense_{4 * i + 2}", "bias"), False)]
    n = lm.layers
    out += [("transformer.ln_f.weight", (f"LayerNorm_{2 * n}", "scale"), False),
            ("transformer.ln_f.bias", (f"LayerNorm_{2 * n}", "bias"), False),
            ("lm_head.weight", (f"Dense_{4 * n}", "kernel"), True), ("lm_head.bias", (f"Dense_{4 * n}", "bias"), False)]
    return out


def flax_to_state(params, lm: kernel.LMConfig) -> dict[str, np.ndarray]:
    """Our flax parameters as the torch model's state (numpy), the zero query/key/value biases included."""
    p = params["params"]
    state = {}
    for name, path, transpose in _layout(lm):
        x = np.asarray(functools.reduce(lambda d, k: d[k], path, p), np.float32)
        state[name] = np.ascontiguousarray(x.T if transpose else x)
    for i in range(lm.layers):
        state[f"transformer.h.{i}.attn.c_attn.bias"] = np.zeros(3 * lm.d_model, np.float32)
    return state


def state_to_flax(state: dict[str, np.ndarray], lm: kernel.LMConfig) -> dict:
    """The inverse of :func:`flax_to_state` (the frozen query/key/value biases must still be zero)."""
    for i in range(lm.layers):
        assert not np.any(state[f"transformer.h.{i}.attn.c_attn.bias"]), "the frozen qkv bias changed"
    p: dict = {}
    for name, path, transpose in _layout(lm):
        node = p
        for k in path[:-1]:
            node = node.setdefault(k, {})
        x = np.asarray(state[name], np.float32)
        node[path[-1]] = x.T if transpose else x
    return {"params": p}


def gpt2_model(lm: kernel.LMConfig, state: dict[str, np.ndarray], special_ids: dict):
    """A transformers GPT-2 causal LM of our LM's shape holding ``state``: untied head with a bias, qkv bias frozen."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=lm.vocab, n_positions=lm.length, n_embd=lm.d_model, n_layer=lm.layers,
                        n_head=lm.heads, n_inner=lm.mlp, activation_function="gelu_new", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
                        **special_ids)
    model = GPT2LMHeadModel(config)
    model.lm_head = torch.nn.Linear(lm.d_model, lm.vocab, bias=True)  # ours: a separate Dense with a bias
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    for block in model.transformer.h:
        block.attn.c_attn.bias.requires_grad_(False)  # ours has no qkv bias: kept at zero
    return model


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def tokenizer(lm: kernel.LMConfig):
    """A WordLevel tokenizer over our vocabulary, ``t0 ... t{V-1}``, plus EOS and PAD (which never reach the model)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(lm.vocab)}
    vocab.update({"<eos>": lm.vocab, "<pad>": lm.vocab + 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


# ---- TRL ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TRLJob:
    """Everything a TRL run needs (picklable, for the processes run at once)."""

    lm: kernel.LMConfig
    state: dict  # the SFT weights as the torch model's state (numpy)
    chosen: np.ndarray  # (steps * batch, L) token ids, the batches in the kernel's order
    rejected: np.ndarray
    batch: int
    steps: int
    beta: float
    lr: float
    max_grad_norm: float
    threads: int | None  # torch threads (None: torch's default)


def _trl_classes():
    from transformers import TrainerCallback
    from trl import DPOTrainer

    class PretokenisedDPOTrainer(DPOTrainer):
        """TRL's own tokenisation, less the EOS token TRL 1.x appends to every text completion (our sequences are
        fixed-length and our vocabulary has no EOS): the columns are exactly the kernel's token ids."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            eos = self._tokenizer.eos_token_id

            def strip(example):
                assert example["chosen_ids"][-1] == eos and example["rejected_ids"][-1] == eos
                return {"chosen_ids": example["chosen_ids"][:-1], "rejected_ids": example["rejected_ids"][:-1]}

            return dataset.map(strip)

    class Clock(TrainerCallback):
        """The training loop's wall time: on_train_begin to on_train_end, and the first step's."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin, self.first = time.perf_counter(), None

        def on_step_end(self, args, state, control, **kwargs):
            if self.first is None:
                self.first = time.perf_counter() - self.begin

        def on_train_end(self, args, state, control, **kwargs):
            self.loop = time.perf_counter() - self.begin

    return PretokenisedDPOTrainer, Clock


def trl_run(job: TRLJob, before_train=None) -> dict:
    """One TRL DPOTrainer run on the job's pairs: timings, the trained weights (numpy state), the final loss."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference log-prob pass reads it
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    # transformers 5 renamed gradient_checkpointing (which TRL's config sets, here False) to activation_checkpointing
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    default_threads = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        return _trl_train(job, before_train)
    finally:
        torch.set_num_threads(default_threads)  # the next run in this process starts from torch's default again


def _trl_train(job: TRLJob, before_train) -> dict:
    import tempfile

    import datasets
    import torch
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig as TRLConfig

    trainer_cls, clock_cls = _trl_classes()
    lm = job.lm
    tok = tokenizer(lm)
    start = time.perf_counter()
    text = lambda ids: " ".join(f"t{int(i)}" for i in ids)
    p = lm.prompt_len
    assert np.array_equal(job.chosen[:, :p], job.rejected[:, :p])
    dataset = datasets.Dataset.from_dict({"prompt": [text(x[:p]) for x in job.chosen],
                                          "chosen": [" " + text(x[p:]) for x in job.chosen],
                                          "rejected": [" " + text(x[p:]) for x in job.rejected]})
    model = gpt2_model(lm, job.state, {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
                                       "pad_token_id": tok.pad_token_id})
    out_dir = tempfile.mkdtemp(prefix="dpo-bench-trl-")
    args = TRLConfig(
        output_dir=out_dir, report_to="none", save_strategy="no", logging_strategy="no", eval_strategy="no",
        disable_tqdm=True, per_device_train_batch_size=job.batch, max_steps=job.steps, learning_rate=job.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, optim="adamw_torch", max_grad_norm=job.max_grad_norm, beta=job.beta, loss_type=["sigmoid"],
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, dataloader_num_workers=0,
        dataloader_pin_memory=False, train_sampling_strategy="sequential", precompute_ref_log_probs=True,
        precompute_ref_batch_size=256, max_length=None, seed=0)
    assert not getattr(args, "activation_checkpointing", args.gradient_checkpointing)
    clock = clock_cls()
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)
    row = trainer.train_dataset[0]
    assert row["prompt_ids"] + row["chosen_ids"] == job.chosen[0].tolist(), "TRL's token ids are not ours"
    setup_s = time.perf_counter() - start
    if before_train is not None:
        before_train()
    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    assert trainer.state.global_step == job.steps
    state = {k: v.detach().cpu().numpy().copy() for k, v in trainer.model.state_dict().items()}
    written = sum(1 for f in Path(out_dir).rglob("*") if f.is_file())  # 0: no checkpoint, log or report was saved
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"files_written": written, "setup_s": setup_s, "train_s": train_s, "loop_s": clock.loop,
            "first_step_s": clock.first,
            "steps": trainer.state.global_step, "pairs": job.steps * job.batch, "train_loss": float(result.training_loss),
            "torch_threads": torch.get_num_threads(), "state": state}


def _trl_child(barrier, queue, job: TRLJob, index: int) -> None:
    try:
        queue.put((index, trl_run(job, before_train=barrier.wait)))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        barrier.abort()
        queue.put((index, {"error": f"{type(exc).__name__}: {exc}"[:500]}))


def trl_parallel(jobs: list[TRLJob]) -> list[dict]:
    """The jobs in separate processes at once, their training loops started together (a barrier after setup)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(len(jobs)), ctx.Queue()
    children = [ctx.Process(target=_trl_child, args=(barrier, queue, job, i)) for i, job in enumerate(jobs)]
    for child in children:
        child.start()
    runs = dict(queue.get() for _ in children)
    for child in children:
        child.join()
    return [runs[i] for i in range(len(jobs))]


# ---- ours --------------------------------------------------------------------------------------------------------


def ours_peers(config: kernel.DPOConfig, loss_fn, ref, inputs: dict) -> dict:
    """Label -> (jitted training, its arguments, devices): one device, and the seeds split over the local devices."""
    seeds = inputs["k_train"].shape[0]
    # keyed by the function, not its source: the plain jit (vmap over seeds of vmap over betas), whose compile is timed
    train = kernel._train_fn(kernel._train_key(config), kernel._Loss(loss_fn, loss_fn))
    betas = jnp.asarray(config.betas, jnp.float32)
    lr, max_grad_norm = (jnp.full((seeds,), getattr(config, name), jnp.float32) for name in kernel.TRACED)
    peers = {}
    split = devices.population_devices(seeds)
    if len(split) > 1:
        def member(ref_i, data_i, key_i, lr_i, max_grad_norm_i):  # one seed: the kernel's training, seed axis 1
            one = jax.tree_util.tree_map(lambda x: x[None], (data_i, key_i, lr_i, max_grad_norm_i))
            return jax.tree_util.tree_map(lambda x: x[0], train(ref_i, one[0], betas, one[1], one[2], one[3], None,
                                                                None))

        refs = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), ref)
        peers[OURS_SPLIT.format(n=len(split))] = (devices.population_jit(member, seeds),
                                                  (refs, inputs["data"], inputs["k_train"], lr, max_grad_norm),
                                                  len(split))
    peers[OURS_ONE] = (train, (ref, inputs["data"], betas, inputs["k_train"], lr, max_grad_norm, None, None), 1)
    return peers


def bench_ours(config: kernel.DPOConfig, loss_fn, ref, inputs: dict, repeats: int) -> dict:
    """Compile every peer (timed apart), run it once (timed too), then ``repeats`` more runs, interleaved."""
    peers = ours_peers(config, loss_fn, ref, inputs)
    rows, compiled, finals = {}, {}, {}
    for label, (fn, args, n_devices) in peers.items():
        start = time.perf_counter()
        compiled[label] = fn.lower(*args).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        params, losses = jax.block_until_ready(compiled[label](*args))
        first_s = time.perf_counter() - start
        finals[label] = jax.tree_util.tree_map(lambda x: np.asarray(x)[:, 0, -1], params)  # (S, ...) last checkpoint
        rows[label] = {"compile_s": compile_s, "times_s": [first_s], "devices": n_devices,
                       "final_loss_per_seed": np.asarray(losses)[:, 0, -1].tolist(),
                       "memory_bytes": common.jax_memory_bytes(compiled[label])}
    for _ in range(repeats):
        for label, (_, args, _) in peers.items():
            rows[label]["times_s"].append(common.timed(lambda c=compiled[label], a=args: c(*a), jax.block_until_ready))
    return {label: (row, finals[label]) for label, row in rows.items()}


# ---- the comparison ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", choices=list(LMS), default="small", help="the template's training (small) or wide LM")
    parser.add_argument("--steps", type=int, default=96, help="gradient steps (the default profile's budget)")
    parser.add_argument("--pairs", type=int, default=256, help="preference pairs per seed")
    parser.add_argument("--batch", type=int, default=32, help="pairs per gradient step")
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--eval-samples", type=int, default=128, help="completions sampled to measure reward and KL")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 8], help="our seed counts")
    parser.add_argument("--repeats", type=int, default=4, help="our timed runs after the first (which is timed too)")
    parser.add_argument("--trl-repeats", type=int, default=2, help="TRL runs after the first, one fresh trainer each")
    parser.add_argument("--trl-procs", type=int, default=devices.usable_cores(),
                        help="also run this many TRL seeds at once in separate processes; <2 skips")
    parser.add_argument("--trl-threads", nargs="+", type=int, default=[0, 1],
                        help="torch threads of the one-process TRL runs, one row each (0: torch's default)")
    parser.add_argument("--logit-tol", type=float, default=1e-4, help="largest logit difference the conversion allows")
    parser.add_argument("--devices", type=int, default=None,
                        help="CPU devices XLA makes, seeds split over them (default: one per core; read before JAX starts)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the tests)")
    parser.add_argument("--out", default=str(common.RESULTS / "dpo.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.pairs, args.batch, args.eval_samples, args.seeds = 8, 32, 8, 16, [1, 2]
        args.repeats, args.trl_repeats, args.trl_procs = 0, 0, min(args.trl_procs, 2)

    from jaxlib_kernels.templates import make

    machine = common.machine()  # here, so that its load average is the one at the start
    template = make("dpo")
    loss_fn = template.load(template.baselines["dpo"].source)  # the DPO baseline's plug-in: softplus(-beta rho)
    config = make_config(args.lm, args.steps, args.pairs, args.batch, args.beta, args.eval_samples)
    lm, steps = config.lm, total_steps(config)
    ref = kernel.sft_params(lm, dataclasses.replace(config.task, reward=""))  # as kernel.train_seeds takes it
    max_seeds = max([*args.seeds, 1, args.trl_procs])
    inputs_all = seed_inputs(config, ref, list(range(max_seeds)))
    indices = batch_indices(config, inputs_all["k_train"])  # (S, steps, batch)

    # the conversion, checked on the SFT model: logits of a batch of pairs, flax against torch
    tok = tokenizer(lm)
    sft_state = flax_to_state(ref, lm)
    sft_torch = gpt2_model(lm, sft_state, {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
                                           "pad_token_id": tok.pad_token_id})
    check_tokens = np.concatenate([np.asarray(inputs_all["data"]["yw"][0]), np.asarray(inputs_all["data"]["yl"][0])])
    flax_logits = np.asarray(kernel.TinyLM(lm).apply(ref, jnp.asarray(check_tokens)))
    sft_diff = float(np.max(np.abs(flax_logits - torch_logits(sft_torch, check_tokens))))
    if sft_diff > args.logit_tol:
        raise SystemExit(f"the GPT-2 conversion of our LM differs by {sft_diff:.3g} in the logits (> {args.logit_tol})")
    conversion = {"torch_model": "transformers GPT2LMHeadModel, untied head with a bias, qkv bias zero and frozen",
                  "params_ours": kernel.num_params(ref), "params_torch": int(sum(v.size for v in sft_state.values())),
                  "params_torch_trainable": int(sum(p.numel() for p in sft_torch.parameters() if p.requires_grad)),
                  "sft_max_abs_logit_diff": sft_diff, "check_batch": int(check_tokens.shape[0]),
                  "logit_tol": args.logit_tol}
    print(f"conversion: {conversion}", flush=True)

    rows, finals = [], {}
    for seeds in args.seeds:
        inputs = {"data": jax.tree_util.tree_map(lambda x, s=seeds: x[:s], inputs_all["data"]),
                  "k_train": inputs_all["k_train"][:seeds], "k_eval": inputs_all["k_eval"][:seeds]}
        print(f"ours, {seeds} seed(s): compiling and running ...", flush=True)
        for label, (row, final) in bench_ours(config, loss_fn, ref, inputs, args.repeats).items():
            reward, kl = measure(config, final, ref, inputs_all, list(range(seeds)))
            med = common.median(row["times_s"])
            finals[(label, seeds)] = final
            rows.append({"peer": label, "seeds": seeds, "processes": 1, "steps": steps, "batch_pairs": config.batch_pairs,
                         "median_s": med, "pairs_per_s": seeds * steps * config.batch_pairs / med,
                         "reward_mean": float(reward.mean()), "reward_per_seed": reward.tolist(),
                         "kl_mean": float(kl.mean()), "kl_per_seed": kl.tolist(), **row})

    def job(seed: int, threads: int | None) -> TRLJob:
        data, idx = inputs_all["data"], indices[seed].reshape(-1)
        return TRLJob(lm, sft_state, np.asarray(data["yw"][seed])[idx], np.asarray(data["yl"][seed])[idx],
                      config.batch_pairs, steps, float(args.beta), config.lr, config.max_grad_norm, threads)

    def back(run: dict) -> tuple[dict, float]:
        """The trained torch weights as flax parameters, and the logit difference of the two on the check batch."""
        params = state_to_flax(run["state"], lm)
        model = gpt2_model(lm, run["state"], {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
                                              "pad_token_id": tok.pad_token_id})
        diff = np.max(np.abs(np.asarray(kernel.TinyLM(lm).apply(params, jnp.asarray(check_tokens)))
                             - torch_logits(model, check_tokens)))
        return params, float(diff)

    def weight_diff(trl_params: dict, ours_params: dict) -> float:
        return float(max(np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in zip(
            jax.tree_util.tree_leaves(trl_params), jax.tree_util.tree_leaves(ours_params), strict=True)))

    ours_by_seed = next(v for (label, s), v in sorted(finals.items(), key=lambda kv: -kv[0][1])
                        if label == OURS_ONE)  # the largest run on one device: seeds 0 .. S-1
    sft_flax = jax.tree_util.tree_map(np.asarray, ref)
    sft_change = float(max(np.max(np.abs(np.asarray(a)[0] - np.asarray(b))) for a, b in zip(
        jax.tree_util.tree_leaves(ours_by_seed), jax.tree_util.tree_leaves(sft_flax), strict=True)))

    for threads in args.trl_threads:
        import torch

        label = f"{TRL_ONE}, {threads or torch.get_num_threads()} torch thread(s){'' if threads else ' (default)'}"
        print(f"{label}, seed 0: {args.trl_repeats + 1} run(s) ...", flush=True)
        runs = [trl_run(job(0, threads or None)) for _ in range(args.trl_repeats + 1)]
        params, back_diff = back(runs[0])
        reward, kl = measure(config, jax.tree_util.tree_map(lambda x: x[None], params), ref, inputs_all, [0])
        med = common.median([r["loop_s"] for r in runs])
        rows.append({"peer": label, "seeds": 1, "processes": 1, "devices": None, "steps": steps,
                     "batch_pairs": config.batch_pairs, "median_s": med, "pairs_per_s": steps * config.batch_pairs / med,
                     "compile_s": common.median([r["setup_s"] for r in runs]), "times_s": [r["loop_s"] for r in runs],
                     "setup_s": [r["setup_s"] for r in runs], "train_call_s": [r["train_s"] for r in runs],
                     "first_step_s": [r["first_step_s"] for r in runs], "torch_threads": runs[0]["torch_threads"],
                     "files_written": sum(r["files_written"] for r in runs),
                     "final_train_loss": [r["train_loss"] for r in runs], "reward_mean": float(reward.mean()),
                     "reward_per_seed": reward.tolist(), "kl_mean": float(kl.mean()), "kl_per_seed": kl.tolist(),
                     "back_conversion_max_abs_logit_diff": back_diff,
                     "max_abs_weight_diff_vs_ours_same_seed": weight_diff(params, jax.tree_util.tree_map(
                         lambda x: x[0], ours_by_seed)),
                     "memory_bytes": None})
    if args.trl_procs > 1:
        n = args.trl_procs
        print(f"TRL, {n} processes at once (seeds 0 .. {n - 1}, one torch thread each) ...", flush=True)
        par = trl_parallel([job(s, 1) for s in range(n)])
        errors = [r["error"] for r in par if "error" in r]
        if errors:
            rows.append({"peer": TRL_PAR.format(n=n), "seeds": n, "processes": n, "error": errors[0]})
        else:
            converted = [back(r) for r in par]
            stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[c[0] for c in converted])
            reward, kl = measure(config, stacked, ref, inputs_all, list(range(n)))
            wall = max(r["loop_s"] for r in par)
            diffs = [weight_diff(c[0], jax.tree_util.tree_map(lambda x, s=s: x[s], ours_by_seed))
                     for s, c in enumerate(converted) if s < ours_by_seed["params"]["pos"].shape[0]]
            rows.append({"peer": TRL_PAR.format(n=n), "seeds": n, "processes": n, "devices": None, "steps": steps,
                         "batch_pairs": config.batch_pairs, "median_s": wall,
                         "pairs_per_s": n * steps * config.batch_pairs / wall,
                         "compile_s": max(r["setup_s"] for r in par), "times_s": [r["loop_s"] for r in par],
                         "setup_s": [r["setup_s"] for r in par], "train_call_s": [r["train_s"] for r in par],
                         "first_step_s": [r["first_step_s"] for r in par], "torch_threads": 1,
                         "files_written": sum(r["files_written"] for r in par),
                         "final_train_loss": [r["train_loss"] for r in par], "reward_mean": float(reward.mean()),
                         "reward_per_seed": reward.tolist(), "kl_mean": float(kl.mean()), "kl_per_seed": kl.tolist(),
                         "back_conversion_max_abs_logit_diff": max(c[1] for c in converted),
                         "max_abs_weight_diff_vs_ours_same_seed": max(diffs) if diffs else None,
                         "memory_bytes": None, "note": "one seed per process; pairs/s = all pairs / the slowest loop"})

    # the fastest one-process TRL row is the one compared against (the conservative ratio)
    trl_one = max((r for r in rows if r["peer"].startswith(TRL_ONE)), key=lambda r: r["pairs_per_s"])
    trl_all = next((r for r in rows if r["peer"].startswith("TRL DPOTrainer,") and "error" not in r), None)
    summary = {"target": TARGET}
    for seeds in args.seeds:
        here = [r for r in rows if r["seeds"] == seeds and r["peer"].startswith("ours")]
        best = max(here, key=lambda r: r["pairs_per_s"])
        one = next(r for r in here if r["peer"] == OURS_ONE)
        entry = {"ours_best_peer": best["peer"], "trl_peer": trl_one["peer"],
                 "ours_over_trl": best["pairs_per_s"] / trl_one["pairs_per_s"],
                 "ours_one_device_over_trl": one["pairs_per_s"] / trl_one["pairs_per_s"]}
        entry["meets_target"] = bool(entry["ours_over_trl"] >= TARGET)
        if trl_all:
            entry["ours_over_trl_all_processes"] = best["pairs_per_s"] / trl_all["pairs_per_s"]
        summary[f"seeds_{seeds}"] = entry
    summary["sft_weight_change_ours_seed0"] = sft_change
    summary["sft_reward"] = float(np.mean(np.asarray(inputs_all["data"]["ref_reward"])))

    result = {"benchmark": "dpo", "quick": args.quick, "lm": args.lm, "lm_config": dataclasses.asdict(lm),
              "sizes": {"params": kernel.num_params(ref), "steps": steps, "pairs_per_seed": config.num_pairs,
                        "batch_pairs": config.batch_pairs, "beta": args.beta, "lr": config.lr,
                        "max_grad_norm": config.max_grad_norm, "eval_samples": config.eval_samples,
                        "seeds": args.seeds, "trl_procs": args.trl_procs},
              "repeats": args.repeats, "trl_repeats": args.trl_repeats, "devices": [str(d) for d in jax.local_devices()],
              "conversion": conversion, "rows": rows, "summary": summary, "machine": machine,
              "versions": common.versions(VERSIONS), "peak_rss_mib": common.peak_rss_bytes() / 2**20,
              "load_avg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}

    print(f"\n## dpo: preference training, pairs/s; LM {args.lm} ({kernel.num_params(ref)} parameters, {lm.layers} "
          f"layer(s), width {lm.d_model}, {lm.heads} heads, vocabulary {lm.vocab}, context {lm.length}), {steps} steps "
          f"x {config.batch_pairs} pairs, beta {args.beta:g}; ours median of {args.repeats + 1}, TRL median of "
          f"{args.trl_repeats + 1}; {result['machine'].get('device')}\n")
    print(common.table(
        ["peer", "seeds", "devices / processes", "compile or setup (s)", "median run (s)", "pairs/s", "reward", "KL (nats)"],
        [[r["peer"], r["seeds"], r.get("devices") or r.get("processes"), r.get("compile_s"), r.get("median_s"),
          r.get("pairs_per_s"), r.get("reward_mean"), r.get("kl_mean") if "error" not in r else r["error"]]
         for r in rows]))
    print("\n" + common.table(
        ["our seeds", "ours (best) / TRL one process", "ours one device / TRL", "ours / TRL all processes",
         f"target {TARGET:g}x met"],
        [[k.removeprefix("seeds_"), v["ours_over_trl"], v["ours_one_device_over_trl"],
          v.get("ours_over_trl_all_processes"), v["meets_target"]] for k, v in summary.items() if k.startswith("seeds_")]))
    diff = trl_one["max_abs_weight_diff_vs_ours_same_seed"]
    print(f"\nSFT model's reward {summary['sft_reward']:.3f}; conversion logit difference {sft_diff:.2g} (SFT), "
          f"{trl_one['back_conversion_max_abs_logit_diff']:.2g} (TRL-trained, back to flax); seed 0's trained weights, "
          f"TRL against ours: largest difference {diff:.2g} (training moved them by up to {sft_change:.2g})")
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
