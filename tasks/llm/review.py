"""Review, LLM backend: an ensemble of NeurIPS reviews with reflection rounds and an area chair's meta-review
(Decision = Overall >= 6); the offline evidence reviewer's checks and the paper's findings (text gate, claims and
figure checks, :func:`tasks.review.paper_findings`) are given to the model and bound its form as they bound the
evidence reviewer's (:func:`tasks.review.apply_findings`: desk reject, retuning, Clarity and Presentation).

A model that reads images (:func:`tasks.runtime.llm.takes_images`, or one litellm does not know: tried) first
reviews each figure (the PNG with its caption and the paragraphs citing it): what it shows, whether it supports the
claim, what is unclear; a model without vision, a failed call or a malformed reply falls back to the objective
figure check, recorded in ``figure_review`` of review.json."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger

from jaxlib_kernels.templates import DEFAULT
from tasks import review as evidence_reviewer
from tasks.llm.prompting import DONE, env_int
from tasks.runtime import artifacts, llm
from tasks.runtime.caching import stage
from tasks.runtime.llm import JSONReplyError, LLMClient, active, check_schema, extract_json, render
from tasks.runtime.runfolder import read_json, write_json
from tasks.textgate import finding

REVIEW_FIELDS = {
    "Summary": "str", "Strengths": "list", "Weaknesses": "list", "Originality": "number", "Quality": "number",
    "Clarity": "number", "Significance": "number", "Questions": "list", "Limitations": "list",
    "Ethical Concerns": "any", "Soundness": "number", "Presentation": "number", "Contribution": "number",
    "Overall": "score", "Confidence": "number", "Decision": "str",
}
ACCEPT_AT = 6
VISION_FIELDS = {"shows": "str", "supports_claim": "bool", "unclear": "list"}
FIGURE_ENV = re.compile(r"\\begin\{figure\*?\}(.*?)\\end\{figure\*?\}", re.DOTALL)


def _normalise_review(r: dict) -> dict:
    out = dict(r)
    for k in ("Originality", "Quality", "Clarity", "Significance", "Soundness", "Presentation", "Contribution"):
        out[k] = round(min(4, max(1, float(r[k]))))
    out["Confidence"] = round(min(5, max(1, float(r["Confidence"]))))
    out["Overall"] = round(min(10, max(1, float(r["Overall"]))))
    for k in ("Strengths", "Weaknesses", "Questions", "Limitations"):
        out[k] = [str(x) for x in r[k]]
    out["Ethical Concerns"] = bool(r.get("Ethical Concerns"))
    model_decision = str(r.get("Decision", ""))
    out["Decision"] = "Accept" if out["Overall"] >= ACCEPT_AT else "Reject"
    if model_decision and model_decision.strip().lower() != out["Decision"].lower():
        out["model_decision"] = model_decision
    return out


def _one_review(client: LLMClient, prompt: str, reflections: int, template_name: str | None = None) -> dict:
    review, messages = client.complete_json(prompt, "review", REVIEW_FIELDS)
    done_after = 0
    for rnd in range(1, reflections + 1):
        text, messages = client.complete(render("review_reflection.j2", template_name, round=rnd, rounds=reflections),
                                         "review", messages)
        done_after = rnd
        try:
            review = check_schema(extract_json(text), REVIEW_FIELDS)
        except JSONReplyError:
            pass  # the previous version stands
        if DONE.search(text or ""):
            break
    out = _normalise_review(review)
    out["reflections"] = done_after
    return out


def paper_text(paper: dict, limit: int = 30000) -> str:
    return (evidence_reviewer.paper_text(paper) or "(no paper text: the paper did not compile)")[:limit]


def _braced(text: str, start: int) -> str:
    """The balanced ``{...}`` argument opening at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0) if text[i - 1] != "\\" else 0
        if depth == 0:
            return text[start + 1:i]
    return text[start + 1:]


def paper_figures(paper: dict) -> list[dict]:
    """Each figure of the paper's .tex: name, PNG, caption, label and the paragraphs citing it."""
    tex_path = paper.get("tex")
    if not tex_path or not Path(tex_path).exists():
        return []
    tex = Path(tex_path).read_text(errors="replace")
    folder = Path(tex_path).parent
    paragraphs = re.split(r"\n\s*\n", re.sub(r"(?<!\\)%.*", "", FIGURE_ENV.sub("", tex)))
    out = []
    for env in FIGURE_ENV.findall(tex):
        graphic = re.search(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]*)\}", env)
        caption = env.find("\\caption{")
        label = re.search(r"\\label\{([^}]*)\}", env)
        if not graphic:
            continue
        stem = Path(graphic.group(1))
        png = next((p for p in (folder / stem.with_suffix(".png"), folder.parent / "figures" / f"{stem.stem}.png")
                    if p.exists()), None)
        if png is None:
            continue
        lab = label.group(1) if label else ""
        out.append({"name": stem.stem, "png": str(png), "label": lab,
                    "caption": " ".join(_braced(env, caption + len("\\caption")).split()) if caption >= 0 else "",
                    "paragraphs": [" ".join(p.split())[:1500] for p in paragraphs
                                   if lab and re.search(r"\\(?:ref|autoref|cref|Cref)\{" + re.escape(lab) + "}", p)][:3]})
    return out


def figure_review(client: LLMClient, paper: dict, template_name: str | None = None) -> dict:
    """The vision model's reading of each figure, or the fallback to the objective figure check with the reason."""
    figures = paper_figures(paper)
    model = client.config.model
    if not figures:
        return {"status": "no figures", "figures": []}
    if llm.takes_images(model) is False:
        return {"status": "fallback", "figures": [],
                "reason": f"{model} does not take images; the objective figure check stands"}
    out = []
    for f in figures:
        try:
            value, _ = client.complete_json(
                render("figure_review.j2", template_name, figure=f["name"], caption=f["caption"],
                       paragraphs=f["paragraphs"]), "review", VISION_FIELDS, images=[f["png"]])
        except llm.BudgetExceeded:
            raise
        except llm.LLMError as exc:
            return {"status": "fallback", "figures": out,
                    "reason": f"the vision review of {f['name']} failed ({exc}); the objective figure check stands"}
        out.append({"figure": f["name"], "label": f["label"], "shows": str(value["shows"]),
                    "supports_claim": bool(value["supports_claim"]), "unclear": [str(u) for u in value["unclear"]]})
    return {"status": "reviewed", "model": model, "figures": out}


def vision_findings(review: dict) -> list[dict]:
    """Findings of the vision review: a figure that does not support its claim (error), what is unclear (warning)."""
    out = []
    for f in review.get("figures", []):
        target = f"figure {f['figure']}"
        if not f["supports_claim"]:
            out.append(finding("vision_support", target, f"the vision model reads {f['shows']!r} and finds that it "
                                                          "does not support the claim"))
        out += [finding("vision_unclear", target, u, "warning") for u in f["unclear"][:3]]
    return out


def review_paper(client: LLMClient, idea: dict, final_info: dict, paper: dict, template_name: str = DEFAULT,
                 num_reviews: int | None = None, reflections: int | None = None) -> dict:
    """An ensemble of NeurIPS reviews with reflections, an area chair's meta-review, and the evidence beside it."""
    num_reviews = env_int("SCIENTIST_NUM_REVIEWS", 3) if num_reviews is None else num_reviews
    reflections = env_int("SCIENTIST_REVIEW_REFLECTIONS", 1) if reflections is None else reflections
    offline = evidence_reviewer.review_paper(idea, final_info, paper, template_name)
    evidence = offline["evidence"]
    shown = evidence + offline["tree_evidence"]  # the models also see what the research tree shows or lacks
    vision = figure_review(client, paper, template_name)
    findings = offline["findings"] + vision_findings(vision)
    relation = (idea.get("novelty") or {}).get("relation") or None
    text = paper_text(paper)
    reviews = [_one_review(client, render("review.j2", template_name, index=i + 1, total=num_reviews,
                                          evidence=shown, paper_text=text, findings=findings, relation=relation,
                                          vision=vision["status"] == "reviewed"), reflections, template_name)
               for i in range(num_reviews)]
    if len(reviews) > 1:
        meta, _ = client.complete_json(render("meta_review.j2", template_name, reviews=reviews, evidence=shown,
                                              findings=findings), "review", REVIEW_FIELDS)
        meta = _normalise_review(meta)
    else:
        meta = dict(reviews[0])
    form = evidence_reviewer.apply_findings({k: meta[k] for k in REVIEW_FIELDS}, findings, idea)
    return {
        **form, "reviewer": "llm", "model": client.config.model, "reviews": reviews, "meta_review": meta,
        "evidence": evidence, "findings": findings, "figure_review": vision,
        "evidence_review": {k: v for k, v in offline.items() if k != "rule"},
        "rule": "Decision = Accept iff the meta-review's Overall >= 6, bounded by the paper's findings as "
                "prompts/review/evidence_rule.md states (desk reject, retuning, Clarity and Presentation); "
                "evidence_review is the offline evidence reviewer's form on the same paper",
    }


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="review_paper_llm", modules=("tasks.llm.prompting", "tasks.review", "tasks.writeup", "tasks.runtime.text",
                                           "tasks.runtime.llm", "tasks.textgate"),
       paths=("prompts/review", "prompts/paper", "prompts/llm"), template_parts=("review", "paper", "llm", "*"))
def review_paper_task(template_name: str, idea: dict, idea_dir: str, model: str) -> dict:
    final_info = read_json(Path(idea_dir) / "final_info.json")
    result = review_paper(active(model), idea, final_info, idea["paper"], template_name)
    write_json(Path(idea_dir) / "review.json", result)
    get_run_logger().info("%s: review %s (overall %s)", idea["Name"], result["Decision"], result["Overall"])
    failed = [e["check"] for e in result["evidence"] if not e["passed"]]
    artifacts.markdown(
        key=f"review-{idea['Name'].replace('_', '-')}"[:60].lower(),
        markdown=f"# Review of {idea['Title']}\n\n**{result['Decision']}** (meta-review overall {result['Overall']}; "
        f"reviews {[r['Overall'] for r in result['reviews']]}; evidence reviewer "
        f"{result['evidence_review']['Overall']})\n\n{result['Summary']}\n\nFailed evidence checks: "
        f"{', '.join(failed) or 'none'}\n\nPDF: `{idea['paper'].get('pdf')}`",
    )
    return result

