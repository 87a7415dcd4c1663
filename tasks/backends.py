"""The backend of a run (ARCHITECTURE.md, "Backends"): one object, chosen once, that runs the stages' tasks.

:class:`OfflineBackend` runs the offline stage of each step (the template's search, behavioural novelty, rendered
code, templated writeup, the evidence reviewer): method ``ideas`` -> ``tasks/ideation.py``, ``novelty`` ->
``tasks/novelty.py``, ``implement`` -> ``tasks/codegen.py``, ``plots`` -> ``tasks/plotting.py``, ``write`` ->
``tasks/writeup.py``, ``review`` -> ``tasks/review.py``, ``tune_baselines`` and ``tree`` -> ``tasks/tree.py`` (each
module's ``@stage`` at its bottom).
:class:`LLMBackend` runs the LLM stage of the same name in ``tasks/llm/`` (plots and the baselines' tuning have
none; its tree stage is ``tasks/llm/tree.py``'s: ``tasks/tree.py``'s tree with the model's proposer)
and, with ``fallback`` on (the default), runs the offline stage for an idea whose LLM stage failed, recording the
stage and the reason on the idea (``idea["fallbacks"]``) and in ``run.json``: a flaky model still ends in a paper.
With ``fallback`` off a failed LLM stage fails its idea (and a failed ideation the run), as before.

The flow calls only these methods; no stage forks on ``if model:``. Each method maps a Prefect task over the ideas
and returns one result per idea, ``None`` for an idea whose stage failed (the reason is in ``idea["status"]``).
A spent budget (:class:`tasks.runtime.llm.BudgetExceeded`) is never a reason to fall back: it stops the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from prefect import get_run_logger, unmapped

from jaxlib_kernels.templates import make
from tasks import codegen, ideation, novelty, plotting, review, tree, writeup
from tasks.idea import IdeaStatus, set_status
from tasks.llm import codegen as llm_codegen
from tasks.llm import ideation as llm_ideation
from tasks.llm import novelty as llm_novelty
from tasks.llm import review as llm_review
from tasks.llm import tree as llm_tree
from tasks.llm import writeup as llm_writeup
from tasks.runtime.llm import BudgetExceeded, redact


def wait(futures, ideas: list[dict], stage: str, record: bool = True) -> list[tuple[object, str | None]]:
    """``(result, None)`` or ``(None, reason)`` per mapped future; with ``record`` a failure marks its idea."""
    out = []
    for fut, idea in zip(futures, ideas, strict=True):
        fut.wait()
        if fut.state.is_completed():
            out.append((fut.result(), None))
            continue
        msg = fut.state.message or "failed"
        try:
            fut.result()
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a stage is recorded on its idea
            msg = f"{type(exc).__name__}: {redact(exc)}"
        if record:
            set_status(idea, IdeaStatus.FAILED, msg, qualifier=f"at {stage}")
            get_run_logger().error("%s failed at %s: %s", idea["Name"], stage, msg)
        out.append((None, msg))
    return out


def results(pairs: list[tuple[object, str | None]]) -> list:
    return [r for r, _ in pairs]


@dataclasses.dataclass
class OfflineBackend:
    """The offline stages: real algorithms, no key, no network."""

    store: dict = dataclasses.field(default_factory=dict)
    name: str = "offline"
    model: str | None = None

    def _task(self, task):
        return task.with_options(**self.store)

    def ideas(self, template_name: str, profile: dict, num_ideas: int, run_id: str, archive_rows: list[dict]) -> list:
        return self._task(ideation.generate_ideas_task)(template_name, profile, num_ideas, run_id, archive_rows)

    def novelty(self, template_name: str, ideas: list[dict], archive_rows: list[dict]) -> list:
        return self._task(novelty.check_novelty_task)(template_name, ideas, archive_rows)

    def implement(self, template_name: str, ideas: list[dict], dirs: list[str], archive_rows: list[dict]) -> list:
        return results(wait(self._task(codegen.implement_candidate_task).map(unmapped(template_name), ideas, dirs),
                            ideas, "implementation"))

    def tune_baselines(self, template_name: str, profile: dict, tree_dir: str) -> dict:
        """The run's baselines tuned once (the tree's tune stage), ``{baseline: tuning}``."""
        return self._task(tree.tune_baselines_task)(template_name, profile, tree_dir)

    def tree(self, template_name: str, ideas: list[dict], dirs: list[str], profile: dict, tuning: dict) -> list:
        """Each idea's research tree: its summary, or ``{"error": reason}`` (the idea goes on untuned)."""
        futures = self._task(tree.grow_tree_task).map(unmapped(template_name), ideas, dirs, unmapped(profile),
                                                      unmapped(tuning))
        return [out if err is None else {"error": err} for out, err in wait(futures, ideas, "tree", record=False)]

    def plots(self, template_name: str, ideas: list[dict], dirs: list[str]) -> list:
        return results(wait(self._task(plotting.make_plots_task).map(unmapped(template_name), ideas, dirs), ideas, "plotting"))

    def write(self, template_name: str, ideas: list[dict], figures: list, context: dict, dirs: list[str]) -> list:
        return results(wait(self._task(writeup.write_paper_task).map(unmapped(template_name), ideas, figures,
                                                             unmapped(context), dirs), ideas, "writeup"))

    def review(self, template_name: str, ideas: list[dict], dirs: list[str]) -> list:
        return results(wait(self._task(review.review_paper_task).map(unmapped(template_name), ideas, dirs), ideas, "review"))


@dataclasses.dataclass
class LLMBackend(OfflineBackend):
    """The LLM stages (litellm, any provider), falling back per idea to the offline stage unless ``fallback`` is off."""

    name: str = "llm"
    model: str | None = None
    fallback: bool = True
    fallbacks: list[dict] = dataclasses.field(default_factory=list)

    def _fall_back(self, stage: str, ideas: list[dict], pairs: list[tuple[object, str | None]],
                   offline: Callable[[list[dict], list[int]], list]) -> list:
        """Results of the LLM stage; the failed ideas' results come from ``offline`` when falling back."""
        failed = [i for i, (_, err) in enumerate(pairs) if err is not None]
        out = results(pairs)
        if not failed:
            return out
        if not self.fallback:
            for i in failed:
                set_status(ideas[i], IdeaStatus.FAILED, pairs[i][1], qualifier=f"at {stage}")
            return out
        for i in failed:
            reason = pairs[i][1]
            ideas[i].setdefault("fallbacks", []).append({"stage": stage, "reason": reason})
            self.fallbacks.append({"idea": ideas[i]["Name"], "stage": stage, "reason": reason})
            get_run_logger().warning("%s: the model failed at %s (%s); using the offline stage", ideas[i]["Name"],
                                     stage, reason)
        for i, value in zip(failed, offline([ideas[i] for i in failed], failed), strict=True):
            out[i] = value
        return out

    def ideas(self, template_name: str, profile: dict, num_ideas: int, run_id: str, archive_rows: list[dict]) -> list:
        try:
            return self._task(llm_ideation.generate_ideas_task)(template_name, profile, num_ideas, run_id,
                                                                archive_rows, self.model)
        except BudgetExceeded:
            raise
        except Exception as exc:
            if not self.fallback:
                raise
            reason = f"{type(exc).__name__}: {redact(exc)}"
            get_run_logger().warning("the model failed at ideation (%s); using the offline search", reason)
            self.fallbacks.append({"idea": None, "stage": "ideation", "reason": reason})
            ideas = super().ideas(template_name, profile, num_ideas, run_id, archive_rows)
            for idea in ideas:
                idea.setdefault("fallbacks", []).append({"stage": "ideation", "reason": reason})
            return ideas

    def novelty(self, template_name: str, ideas: list[dict], archive_rows: list[dict]) -> list:
        futures = self._task(llm_novelty.check_novelty_task).map(unmapped(template_name), ideas,
                                                                  unmapped(archive_rows), unmapped(self.model))
        pairs = wait(futures, ideas, "novelty", record=False)
        # the offline rule of a fallen-back idea still sees the run's other ideas (in order)
        return self._fall_back("novelty", ideas, pairs,
                               lambda sub, _: novelty.check_all(make(template_name), sub, archive_rows))

    def implement(self, template_name: str, ideas: list[dict], dirs: list[str], archive_rows: list[dict]) -> list:
        futures = self._task(llm_codegen.implement_candidate_task).map(
            unmapped(template_name), ideas, dirs, unmapped(archive_rows), unmapped(self.model))
        pairs = wait(futures, ideas, "implementation", record=False)
        template = make(template_name)
        for i, (impl, err) in enumerate(pairs):  # rejected model code: the offline rendering, where there is one
            if err is None and impl is not None and not impl.get("accepted") and self.fallback \
                    and _renderable(template, ideas[i]):
                attempts = len(impl.get("attempts") or [1])
                reason = (f"the model's code was rejected by the gate after {attempts} attempt(s): "
                          f"{impl['validation']['reason']}")
                pairs[i] = (None, reason)
        out = self._fall_back("implementation", ideas, pairs, lambda sub, idx: OfflineBackend.implement(
            self, template_name, sub, [dirs[i] for i in idx], archive_rows))
        self._behaviour(template_name, ideas, out, archive_rows)
        return out

    @staticmethod
    def _behaviour(template_name: str, ideas: list[dict], impls: list, archive_rows: list[dict]) -> None:
        """The accepted sources' behavioural novelty, in order, against baselines, the archive and each other."""
        template = make(template_name)
        accepted: list[dict] = []
        for idea, impl in zip(ideas, impls, strict=True):
            if not impl or not impl.get("accepted"):
                continue
            candidate = {**idea, "source": impl["source"]}
            impl["behaviour"] = novelty.check_novelty(template, candidate, archive_rows, accepted)
            if impl["behaviour"]["decision"] == "novel":
                accepted.append(candidate)

    def tree(self, template_name: str, ideas: list[dict], dirs: list[str], profile: dict, tuning: dict) -> list:
        """The tree with the model's proposals (a failing proposal falls back inside it, node by node); an idea
        whose tree failed as a whole grows it again offline."""
        futures = self._task(llm_tree.grow_tree_task).map(unmapped(template_name), ideas, dirs, unmapped(profile),
                                                          unmapped(tuning), unmapped(self.model))
        pairs = wait(futures, ideas, "tree", record=False)
        trees = self._fall_back("tree", ideas, pairs, lambda sub, idx: OfflineBackend.tree(
            self, template_name, sub, [dirs[i] for i in idx], profile, tuning))
        return [t if t is not None else {"error": err} for t, (_, err) in zip(trees, pairs, strict=True)]

    def write(self, template_name: str, ideas: list[dict], figures: list, context: dict, dirs: list[str]) -> list:
        futures = self._task(llm_writeup.write_paper_task).map(unmapped(template_name), ideas, figures,
                                                                unmapped(context), dirs, unmapped(self.model))
        pairs = wait(futures, ideas, "writeup", record=False)
        for idea, (paper, _) in zip(ideas, pairs, strict=True):  # sections the text gate gave to the offline text
            reason = llm_writeup.gate_fallback(paper)
            if reason and self.fallback:
                idea.setdefault("fallbacks", []).append({"stage": "writeup", "reason": reason})
                self.fallbacks.append({"idea": idea["Name"], "stage": "writeup", "reason": reason})
        return self._fall_back("writeup", ideas, pairs, lambda sub, idx: OfflineBackend.write(
            self, template_name, sub, [figures[i] for i in idx], context, [dirs[i] for i in idx]))

    def review(self, template_name: str, ideas: list[dict], dirs: list[str]) -> list:
        futures = self._task(llm_review.review_paper_task).map(unmapped(template_name), ideas, dirs,
                                                                unmapped(self.model))
        pairs = wait(futures, ideas, "review", record=False)
        return self._fall_back("review", ideas, pairs, lambda sub, idx: OfflineBackend.review(
            self, template_name, sub, [dirs[i] for i in idx]))


def _renderable(template, idea: dict) -> bool:
    """Whether the offline code stage can render this idea (an offline idea carries its expression or candidate)."""
    try:
        template.render(template, idea)
    except Exception:  # noqa: BLE001 - an LLM idea with no expression has no offline rendering
        return False
    return True


def make_backend(model: str | None, store: dict, fallback: bool = True) -> OfflineBackend:
    """The run's backend: offline without a model, else the LLM backend for ``model``."""
    if model:
        return LLMBackend(store=store, model=model, fallback=fallback)
    return OfflineBackend(store=store)
