"""The stages of an idea's research tree over an evaluation callable (pure: ``tasks/tree.py`` runs them).

* :class:`Grower` turns node specs into :class:`~.record.Node` s: the nodes its record already holds (by id) as
  recorded, the others evaluated together in one ``evaluate(texts, hparams)`` call (:func:`population_evaluator`:
  one ``Template.evaluate_population`` per search setting), the record saved after every call;
* :func:`implement`: the code stage's attempts as draft and debug nodes, the accepted one evaluated (the root);
* :func:`tune`: the candidate's constants and the template's hyperparameters (:func:`tuning_space`) searched by
  ``jaxlib_kernels.optimisers.tune`` for a budget of evaluations (the same for the candidate and every baseline);
* :func:`improve`: best-first rounds of variants (the proposer's, the template's operators offline);
* :func:`ablate`: the final candidate's ablations, each with its change against the final candidate.

The best node of a stage is chosen by the template's ``Metric`` alone (:func:`best`); a model may only break an
exact tie, and the chosen node's ``tie_break`` says so.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxlib_kernels import optimisers
from jaxlib_kernels.optimisers.space import Continuous, Space
from jaxlib_kernels.tree import operators
from jaxlib_kernels.tree.record import Node, TreeRecord, node_id

Evaluate = Callable[[list[str], list[dict]], dict]  # -> {"final": {setting: (N, S)}, "errors": [str | None] * N}


def population_evaluator(template, search: Mapping) -> Evaluate:
    """``evaluate(texts, hparams)``: every node on every search setting (one population call per setting) and
    seed; a node's error is the first of its settings'."""
    def evaluate(texts: list[str], hparams: list[dict]) -> dict:
        finals, errors = {}, [None] * len(texts)
        for s in search["settings"]:
            out = template.evaluate_population(template.setting(s), int(search["budget"][s]), list(texts),
                                               [dict(h) for h in hparams], list(search["seeds"]))
            finals[s] = np.asarray(out["final"], dtype=np.float64).reshape(len(texts), len(search["seeds"]))
            errors = [e or f"{s}: {o}" if o else e for e, o in zip(errors, out["errors"], strict=True)]
        return {"final": finals, "errors": errors}

    return evaluate


class Grower:
    """Makes the nodes of one record: ``grow(specs)`` returns a node per spec (keys: stage, kind, method, role,
    candidate, and optionally hparams, label, parent, source, why, round; ``evaluate=False`` for a node recorded
    without evaluation, e.g. a draft the gate rejected), reusing the record's nodes by id and evaluating the rest in
    one call. ``evaluated`` counts the nodes this grower evaluated."""

    def __init__(self, template, record: TreeRecord, evaluate: Evaluate, search: Mapping):
        self.template, self.record, self.evaluate, self.search = template, record, evaluate, dict(search)
        self.node_cost = len(search["seeds"]) * sum(int(b) for b in search["budget"].values())
        self.evaluated = 0
        self.calls = 0

    def id_of(self, spec: Mapping) -> str:
        return node_id(spec["stage"], spec["kind"], spec["method"], spec["candidate"], spec.get("hparams"),
                       self.search)

    def _node(self, spec: Mapping, nid: str) -> Node:
        return Node(id=nid, parent=spec.get("parent"), stage=spec["stage"], kind=spec["kind"], method=spec["method"],
                    role=spec["role"], candidate=spec["candidate"], hparams=dict(spec.get("hparams") or {}),
                    label=spec.get("label", ""), source=spec.get("source", "offline"), why=spec.get("why"),
                    round=spec.get("round"), computed_in=self.record.growth)

    def grow(self, specs: list[Mapping]) -> list[Node]:
        ids = [self.id_of(s) for s in specs]
        todo: dict[str, Mapping] = {}
        for nid, spec in zip(ids, specs, strict=True):
            if self.record.get(nid) is None and nid not in todo:
                todo[nid] = spec
        fresh = {nid: self._node(s, nid) for nid, s in todo.items()}
        run = [nid for nid, s in todo.items() if s.get("evaluate", True)]
        for nid, node in fresh.items():
            if nid not in run:
                node.buggy = True
        if run:
            out = self.evaluate([fresh[n].candidate for n in run], [fresh[n].hparams for n in run])
            self.calls += 1
            self.evaluated += len(run)
            for i, nid in enumerate(run):
                node = fresh[nid]
                values = {s: np.asarray(out["final"][s][i], dtype=np.float64) for s in self.search["settings"]}
                node.metric = {s: [float(x) if np.isfinite(x) else None for x in v] for s, v in values.items()}
                every = np.concatenate([v.reshape(-1) for v in values.values()])
                error = out["errors"][i]
                node.buggy = error is not None or not np.all(np.isfinite(every))
                node.score = None if node.buggy else float(np.mean(every))
                node.cost = self.node_cost
                if error is not None:
                    node.why = error
                elif node.buggy:
                    node.why = "a non-finite metric"
        for node in fresh.values():
            self.record.add(node)
        if fresh:
            self.record.save()
        return [self.record.get(nid) for nid in ids]


# ---- the metric ------------------------------------------------------------------------------------------------

def best(metric, nodes: list[Node], tie_break: Callable[[list[Node]], str | None] | None = None) -> Node | None:
    """The best working node by ``metric`` (its direction applied there; on exactly equal scores the first made),
    or None. ``tie_break(tied nodes) -> id`` (a model) may only choose among exactly equal best scores; the
    chosen node's ``tie_break`` records it."""
    ok = [n for n in nodes if not n.buggy and n.score is not None]
    if not ok:
        return None
    top = metric.best({n.id: n.score for n in ok})
    chosen = next(n for n in ok if n.id == top)
    tied = [n for n in ok if n.score == chosen.score]
    if len(tied) > 1 and tie_break is not None:
        pick = tie_break(tied)
        if pick in {n.id for n in tied}:
            chosen = next(n for n in tied if n.id == pick)
            chosen.tie_break = {"by": "model", "among": [n.id for n in tied], "chose": pick}
    return chosen


def improvement(metric, node: Node | None, reference: Node | None) -> float | None:
    if node is None or reference is None or node.score is None or reference.score is None:
        return None
    return metric.improvement(node.score, reference.score)


# ---- implement ---------------------------------------------------------------------------------------------------

def implement(grower: Grower, attempts: list[dict], accepted: str | None, method: str) -> Node | None:
    """Draft and debug nodes from the code stage's attempts (``validation.json``'s, oldest first; an attempt's
    ``source`` where it kept one): a rejected attempt is a buggy node with the gate's reason, not evaluated; a
    repair that passed says which error it repaired; the accepted text is evaluated. Returns the accepted node
    (the tree's root), or None."""
    attempts = list(attempts) or [{"accepted": accepted is not None, "reason": None}]
    parent, root, previous = None, None, None
    for k, attempt in enumerate(attempts):
        ok = bool(attempt.get("accepted")) and accepted is not None
        text = accepted if ok else (attempt.get("source") or f"(attempt {k + 1}: its source was not kept)")
        spec = {"stage": "implement", "kind": "draft" if k == 0 else "debug", "method": method, "role": "candidate",
                "candidate": text, "parent": parent, "evaluate": ok,
                "label": "first draft" if k == 0 else f"repair {k}",
                "why": (f"repairs: {previous}" if previous and ok else None) if ok else attempt.get("reason")}
        node = grower.grow([spec])[0]
        parent, previous = node.id, attempt.get("reason")
        if ok:
            root = node
            break
    return root


# ---- tune ------------------------------------------------------------------------------------------------------

def const_name(i: int) -> str:
    return f"const[{i}]"


def tuning_space(template, values: list[float]) -> Space | None:
    """The template's hyperparameters and one parameter per constant: the magnitude of c on a log range [|c|/4,
    4|c|] (its sign kept), [-1, 1] for 0; None when there is nothing to tune. A log range centred on c: the search
    starts at the untuned constants."""
    params = list(template.hparams)
    for i, c in enumerate(values):
        params.append(Continuous(const_name(i), abs(c) / 4, abs(c) * 4, log=True) if c else
                      Continuous(const_name(i), -1.0, 1.0))
    return Space(params) if params else None


def population_of(budget: int) -> int:
    """Members per generation: the largest divisor of ``budget`` up to 8 that leaves two generations at least (so
    the optimiser sees its history), so that exactly ``budget`` evaluations are made."""
    fits = [d for d in range(1, min(budget, 8) + 1) if budget % d == 0 and budget // d >= 2]
    return max(fits) if fits else max(1, budget)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune(grower: Grower, parent: Node, budget: int, optimiser: str = "evotf", seed: int = 0,
         search_fn: Callable[..., dict] = optimisers.tune, before_hparams: Mapping | None = None,
         tie_break: Callable[[list[Node]], str | None] | None = None) -> dict:
    """Tune ``parent`` (a working node) for ``budget`` evaluations: tune nodes (children of ``parent``, a
    generation per population call). ``search_fn`` is ``jaxlib_kernels.optimisers.tune`` or a wrapper of it with
    the same signature (``tasks.tuning.tune`` gives EvoLLM its model); ``tie_break`` as in :func:`best`. Returns ``best`` (the best of ``parent`` and
    its tune nodes by the metric), ``nodes``, ``before`` / ``after`` (``{"hparams", "constants"}``),
    ``score_before`` / ``score_after``, ``evaluations`` and ``cost`` (in the template's budget unit)."""
    template = grower.template
    values = operators.constants(template, parent.candidate)
    signs = [-1.0 if c < 0 else 1.0 for c in values]
    space = tuning_space(template, values)
    before = {"hparams": {**dict(before_hparams or {}), **parent.hparams}, "constants": values}
    made: list[Node] = []

    def spec_of(config: dict) -> dict:
        hp = {p.name: config[p.name] for p in template.hparams}
        new = [s * float(config[const_name(i)]) if values[i] else float(config[const_name(i)])
               for i, s in enumerate(signs)]
        text = operators.with_constants(template, parent.candidate, new) if values else parent.candidate
        label = ", ".join([f"{k}={_short(v)}" for k, v in hp.items()] + [f"c{i + 1}={v:.4g}" for i, v in
                                                                          enumerate(new)])
        return {"stage": "tune", "kind": "tune", "method": parent.method, "role": parent.role, "candidate": text,
                "hparams": hp, "parent": parent.id, "label": label}

    def objective(configs: list[dict]) -> np.ndarray:
        nodes = grower.grow([spec_of(c) for c in configs])
        made.extend(n for n in nodes if n.id not in {m.id for m in made})
        return np.array([np.nan if n.score is None else -template.metric.sign * n.score for n in nodes])

    evaluations = 0
    if space is not None and budget > 0:
        out = search_fn(space, objective, int(budget), optimiser, population=population_of(int(budget)), seed=seed)
        evaluations = int(out["evaluations"])
    chosen = best(template.metric, [parent, *made], tie_break) or parent
    after = {"hparams": {**before["hparams"], **chosen.hparams},
             "constants": operators.constants(template, chosen.candidate)}
    return {"best": chosen, "nodes": made, "before": before, "after": after, "score_before": parent.score,
            "score_after": chosen.score, "evaluations": evaluations, "cost": evaluations * grower.node_cost,
            "optimiser": optimiser}


def tuning_entry(result: dict, role: str) -> dict:
    """The record's ``tuning[method]`` entry of a :func:`tune` result."""
    return {"role": role, "before": result["before"], "after": result["after"],
            "score_before": result["score_before"], "score_after": result["score_after"],
            "evaluations": result["evaluations"], "cost": result["cost"], "optimiser": result["optimiser"],
            "node": result["best"].id, "source": result["best"].candidate, "hparams": result["best"].hparams}


# ---- proposals (offline, or a proposer with the offline fallback) ---------------------------------------------------

def stable_seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


class OfflineProposer:
    """The tree's offline proposals through the proposer protocol (``tasks/llm/tree.py`` implements the same with
    a model): ``improve`` the template's variants of ``idea["tree_node"]["candidate"]``, ``ablate`` its
    ablations against ``idea["tree_node"]["baselines"]`` (name -> text), ``debug`` the text as it is (offline, the
    code stage's own repair is all there is)."""

    source = "offline"

    def improve(self, template_name: str, idea: dict, tree_summary: str, tried: list[str], n: int):
        from jaxlib_kernels.templates import make

        node = idea["tree_node"]
        return operators.variants(make(template_name), node["candidate"], n,
                                  stable_seed(idea.get("Name"), node["candidate"], len(tried)), set(tried))

    def ablate(self, template_name: str, idea: dict, text: str):
        from jaxlib_kernels.templates import make

        return operators.ablations(make(template_name), text, idea["tree_node"].get("baselines") or {})

    def debug(self, template_name: str, idea: dict, text: str, error: str) -> str:
        return text


def _static_ok(template, text: str) -> bool:
    try:
        template.static_check(text)
    except Exception:  # noqa: BLE001 - an unusable proposal is dropped, the others kept
        return False
    return True


def propose(template, proposer, method: str, args: tuple, n: int | None = None) -> tuple[list, str, str | None]:
    """``(proposals, source, why)``: ``proposer.<method>(*args)``, its unusable proposals (not text, failing the
    template's static check) dropped; on an exception or nothing usable the offline proposal with source
    ``llm-fallback`` and the reason. An exception whose class sets ``stops_run`` (the LLM client's spent budget)
    is no reason to fall back: it goes on up and ends the run."""
    offline = OfflineProposer()
    if proposer is None or isinstance(proposer, OfflineProposer):
        return list(getattr(offline, method)(*args))[:n], "offline", None
    try:
        out = []
        for label, text in getattr(proposer, method)(*args):
            if isinstance(text, str) and isinstance(label, str) and _static_ok(template, text):
                out.append((label, text))
        if not out:
            raise ValueError("no usable proposal in the reply")
        return out[:n], getattr(proposer, "source", "llm"), None
    except Exception as exc:  # any failure of the proposer falls back to the offline proposal
        if getattr(exc, "stops_run", False):
            raise
        return list(getattr(offline, method)(*args))[:n], "llm-fallback", f"{type(exc).__name__}: {exc}"[:300]


def summary(record: TreeRecord, metric) -> str:
    """A short text of the tree for an improve prompt: every working node's stage, label and score, best first."""
    nodes = [n for n in record.nodes if not n.buggy and n.score is not None]
    order = metric.rank({n.id: n.score for n in nodes})
    by_id = {n.id: n for n in nodes}
    lines = [f"{by_id[i].stage}/{by_id[i].kind} {by_id[i].label or by_id[i].method}: {metric.name} "
             f"{by_id[i].score:.4g}" for i in order[:20]]
    return "\n".join(lines)


# ---- improve and ablate -----------------------------------------------------------------------------------------

def _tree_node(node: Node, baselines: Mapping[str, str] | None = None) -> dict:
    return {"candidate": node.candidate, "hparams": node.hparams, "score": node.score, "label": node.label,
            "baselines": dict(baselines or {})}


def improve(grower: Grower, parent: Node, rounds: int, width: int, idea: dict, proposer=None,
            tie_break: Callable[[list[Node]], str | None] | None = None) -> dict:
    """Best-first bounded rounds: each round proposes ``width`` variants of the best node so far (which keeps its
    hyperparameters) and evaluates them in one call. A round the record already holds (same parent, same round)
    is read back, not proposed again. Returns ``best`` (of ``parent`` and every variant) and ``nodes``."""
    template = grower.template
    current, made = parent, []
    tried = {parent.candidate} | {n.candidate for n in grower.record.of_stage("improve")}
    for r in range(int(rounds)):
        nodes = [n for n in grower.record.of_stage("improve") if n.round == r and n.parent == current.id]
        if not nodes:
            asked = {**idea, "tree_node": _tree_node(current)}
            proposals, source, why = propose(
                template, proposer, "improve",
                (template.name, asked, summary(grower.record, template.metric), sorted(tried), int(width)), int(width))
            proposals = [(label, text) for label, text in proposals if text not in tried]
            if not proposals:
                break
            nodes = grower.grow([{"stage": "improve", "kind": "improve", "method": current.method,
                                  "role": current.role, "candidate": text, "hparams": current.hparams,
                                  "parent": current.id, "label": label, "source": source, "why": why, "round": r}
                                 for label, text in proposals])
        made += nodes
        tried |= {n.candidate for n in nodes}
        current = best(template.metric, [current, *nodes], tie_break) or current
    return {"best": current, "nodes": made}


def ablate(grower: Grower, final: Node, baselines: Mapping[str, str], limit: int, idea: dict,
           proposer=None) -> dict:
    """At most ``limit`` ablations of ``final`` (with its hyperparameters) in one call. Returns ``nodes`` and
    ``rows``: ``{"node", "label", "score", "delta"}``, ``delta`` the ablation's improvement over the final
    candidate in the metric's direction (negative: the removed part helped)."""
    template = grower.template
    if int(limit) <= 0:
        return {"nodes": [], "rows": []}
    asked = {**idea, "tree_node": _tree_node(final, baselines)}
    proposals, source, why = propose(template, proposer, "ablate", (template.name, asked, final.candidate),
                                     int(limit))
    nodes = grower.grow([{"stage": "ablate", "kind": "ablate", "method": final.method, "role": final.role,
                          "candidate": text, "hparams": final.hparams, "parent": final.id, "label": label,
                          "source": source, "why": why} for label, text in proposals if text != final.candidate])
    rows = [{"node": n.id, "label": n.label, "score": n.score, "delta": improvement(template.metric, n, final)}
            for n in nodes]
    return {"nodes": nodes, "rows": rows}
