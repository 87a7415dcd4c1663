"""Prefect tasks over the reporting stages whose plain functions live in ``plotting``, ``writeup`` and ``review``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jaxlib_kernels.templates import make
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import read_json, write_json


def labels_of(template_name: str, idea: dict) -> dict[str, str]:
    template = make(template_name)
    return {**template.baseline_labels, idea["Name"]: f"{idea['Name'].replace('_', ' ')} (ours)"}


def paper_baselines(template, context: dict) -> dict:
    """The baselines a paper describes (name -> ``Baseline``): the profile's, else every baseline of the template."""
    profile = context.get("profile") or {}
    names = profile.get("baselines") if isinstance(profile, dict) else getattr(profile, "baselines", None)
    chosen = [n for n in (names or []) if n in template.baselines]
    return {n: template.baselines[n] for n in chosen} if chosen else dict(template.baselines)


@stage(name="make_plots", modules=("tasks.plotting",))
def make_plots_task(template_name: str, idea: dict, idea_dir: str) -> list[dict]:
    """Curves and final values from the idea's results.parquet, then the template's own figures."""
    from tasks.plotting import make_plots

    template = make(template_name)
    results = pd.read_parquet(Path(idea_dir) / "results.parquet")
    final_info = read_json(Path(idea_dir) / "final_info.json")
    sources = {b: baseline.source for b, baseline in template.baselines.items()}
    sources[idea["Name"]] = idea["source"]
    return make_plots(idea, results, final_info, sources, Path(idea_dir) / "figures", labels_of(template_name, idea),
                      template)


# the text stages' cache keys cover their code and text (generic and the template's layer; "*": references.bib)
@stage(name="write_paper", retries=1, modules=("tasks.writeup", "tasks.runtime.text"), paths=("prompts/paper",),
       template_parts=("paper", "*"))
def write_paper_task(template_name: str, idea: dict, figures: list[dict], context: dict, idea_dir: str) -> dict:
    """pylatex -> latexmk -> pymupdf checks; the paper folder keeps .tex and build.log whatever happens."""
    from prefect import get_run_logger

    from tasks.writeup import write_paper

    template = make(template_name)
    final_info = read_json(Path(idea_dir) / "final_info.json")
    ctx = {**context, "labels": labels_of(template_name, idea), "baselines": paper_baselines(template, context)}
    paper = write_paper(template_name, idea, final_info, figures, ctx, Path(idea_dir) / "paper")
    paper = {k: v for k, v in paper.items() if k != "text"}
    get_run_logger().info("%s: paper %s (%s pages)", idea["Name"], paper.get("pdf") or "FAILED", paper.get("pages"))
    return paper


@stage(name="review_paper", modules=("tasks.review", "tasks.writeup", "tasks.runtime.text"),
       paths=("prompts/review", "prompts/paper"), template_parts=("review", "paper", "*"))
def review_paper_task(template_name: str, idea: dict, idea_dir: str) -> dict:
    """The evidence reviewer's NeurIPS form, written to review.json."""
    from prefect import get_run_logger

    from tasks.review import review_paper
    from tasks.runtime import artifacts

    final_info = read_json(Path(idea_dir) / "final_info.json")
    result = review_paper(idea, final_info, idea["paper"], template_name)
    write_json(Path(idea_dir) / "review.json", result)
    get_run_logger().info("%s: review %s (overall %s)", idea["Name"], result["Decision"], result["Overall"])
    artifacts.markdown(
        key=f"review-{idea['Name'].replace('_', '-')}"[:60].lower(),
        markdown=f"# Review of {idea['Title']}\n\n**{result['Decision']}** (overall {result['Overall']})\n\n"
        f"{result['Summary']}\n\nPDF: `{idea['paper'].get('pdf')}`",
    )
    return result
