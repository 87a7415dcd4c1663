"""Review, LLM backend: an ensemble of NeurIPS reviews with reflection rounds and an area chair's meta-review
(Decision = Overall >= 6); the offline evidence reviewer's checks are given to the model and kept beside its form."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from jaxlib_kernels.templates import DEFAULT
from tasks import review as evidence_reviewer
from tasks.llm.prompting import DONE, env_int
from tasks.runtime import artifacts
from tasks.runtime.caching import stage
from tasks.runtime.llm import JSONReplyError, LLMClient, active, check_schema, extract_json, render
from tasks.runtime.runfolder import read_json, write_json

REVIEW_FIELDS = {
    "Summary": "str", "Strengths": "list", "Weaknesses": "list", "Originality": "number", "Quality": "number",
    "Clarity": "number", "Significance": "number", "Questions": "list", "Limitations": "list",
    "Ethical Concerns": "any", "Soundness": "number", "Presentation": "number", "Contribution": "number",
    "Overall": "score", "Confidence": "number", "Decision": "str",
}
ACCEPT_AT = 6


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
    pdf = paper.get("pdf")
    if pdf and Path(pdf).exists():
        import pymupdf

        with pymupdf.open(pdf) as doc:
            text = "\n".join(page.get_text() for page in doc)
    elif paper.get("tex") and Path(paper["tex"]).exists():
        text = Path(paper["tex"]).read_text(errors="replace")
    else:
        text = "(no paper text: the paper did not compile)"
    return text[:limit]


def review_paper(client: LLMClient, idea: dict, final_info: dict, paper: dict, template_name: str = DEFAULT,
                 num_reviews: int | None = None, reflections: int | None = None) -> dict:
    """An ensemble of NeurIPS reviews with reflections, an area chair's meta-review, and the evidence beside it."""
    num_reviews = env_int("SCIENTIST_NUM_REVIEWS", 3) if num_reviews is None else num_reviews
    reflections = env_int("SCIENTIST_REVIEW_REFLECTIONS", 1) if reflections is None else reflections
    offline = evidence_reviewer.review_paper(idea, final_info, paper, template_name)
    evidence = offline["evidence"]
    text = paper_text(paper)
    reviews = [_one_review(client, render("review.j2", template_name, index=i + 1, total=num_reviews,
                                          evidence=evidence, paper_text=text), reflections, template_name)
               for i in range(num_reviews)]
    if len(reviews) > 1:
        meta, _ = client.complete_json(render("meta_review.j2", template_name, reviews=reviews, evidence=evidence),
                                       "review", REVIEW_FIELDS)
        meta = _normalise_review(meta)
    else:
        meta = dict(reviews[0])
    form = {k: meta[k] for k in REVIEW_FIELDS}
    return {
        **form, "reviewer": "llm", "model": client.config.model, "reviews": reviews, "meta_review": meta,
        "evidence": evidence,
        "evidence_review": {k: v for k, v in offline.items() if k != "rule"},
        "rule": "Decision = Accept iff the meta-review's Overall >= 6; evidence_review is the offline evidence "
                "reviewer's form (prompts/review/evidence_rule.md) on the same paper",
    }


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="review_paper_llm", modules=("tasks.llm.prompting", "tasks.review", "tasks.writeup", "tasks.runtime.text",
                                           "tasks.runtime.llm"),
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

