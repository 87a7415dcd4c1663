"""write_paper: real pylatex -> latexmk -> pymupdf runs on a realistic synthetic experiment (see conftest)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pymupdf
import pytest

from tasks import writeup

ROOT = Path(__file__).resolve().parents[2]
BIB = ROOT / "prompts" / "templates" / "lpo" / "references.bib"
REFS = ROOT / "prompts" / "templates" / "lpo" / "references.json"
BAD_TITLE = r"A \bad {title}} with 100% of_under_scores & #hash $x ~tilde ^caret {"


def pdf_text(path: str) -> str:
    with pymupdf.open(path) as doc:
        return "\n".join(page.get_text() for page in doc).replace("\u2212", "-")


def test_the_paper_compiles_and_passes_its_checks(win_paper):
    assert win_paper["error"] is None and not win_paper["repaired"]
    assert Path(win_paper["pdf"]).stat().st_size > 50_000
    assert win_paper["pages"] >= 4
    assert win_paper["figures"] >= 2
    assert win_paper["unresolved_refs"] == 0
    assert win_paper["table_numbers_found"] is True
    out = Path(win_paper["tex"]).parent
    for name in ("paper.tex", "references.bib", "paper.pdf", "build.log"):
        assert (out / name).stat().st_size > 0
    assert "latexmk" in Path(win_paper["log"]).read_text()


def test_pdf_has_the_pages_images_and_numbers_of_final_info(win_paper, win_experiment):
    """Checked here independently of write_paper's own read-back."""
    _, final_info = win_experiment
    with pymupdf.open(win_paper["pdf"]) as doc:
        assert doc.page_count >= 4
        images = {img[0] for page in doc for img in page.get_images(full=True)}
    assert len(images) >= 2
    text = pdf_text(win_paper["pdf"])
    for info in final_info.values():
        for method, mean in info["means"].items():
            assert f"{mean:.3f}" in text, method
            assert f"{info['stderrs'][method]:.3f}" in text, method
        comp = info["comparison"]
        assert f"{comp['difference']:+.3f}" in text
    assert "??" not in text and "[?]" not in text
    log = (Path(win_paper["tex"]).parent / "paper.log").read_text(errors="replace")
    assert "undefined" not in log.lower().replace("undefined references", "")


def test_tex_has_the_formulas_figures_and_references(win_paper, kit):
    tex = Path(win_paper["tex"]).read_text()
    for package in ("natbib", "graphicx", "amsmath", "booktabs", "hyperref"):
        assert f"{{{package}}}" in tex
    assert kit.make_idea()["expression_latex"] in tex
    assert r"\clip" not in tex and r"\mathrm{clip}" in tex  # baselines typeset from their expression trees
    for name in ("learning_curves", "final_returns", "drift_shape"):
        key = name.replace("_", "-")
        assert f"\\label{{fig:{key}}}" in tex and f"\\ref{{fig:{key}}}" in tex
        assert f"figures/{name}.png" in tex
    assert r"\toprule" in tex and r"\bibliography{references}" in tex


def test_the_wording_follows_the_results(win_paper, null_paper):
    win, null = pdf_text(win_paper["pdf"]), pdf_text(null_paper["pdf"])
    win_abstract = win[win.index("Abstract"):win.index("Introduction")]
    null_abstract = null[null.index("Abstract"):null.index("Introduction")]
    assert "significantly better than the strongest baseline" in " ".join(win_abstract.split())
    assert "carries over to held-out settings" in " ".join(win_abstract.split())
    assert "no significant difference" in " ".join(null_abstract.split())
    assert "significantly better" not in " ".join(null_abstract.split())
    assert "not significant" in " ".join(null.split())
    assert null_paper["table_numbers_found"] and null_paper["unresolved_refs"] == 0


def test_latex_breaking_text_is_escaped(tmp_path, win_experiment, win_figures, kit):
    _, final_info = win_experiment
    idea = kit.make_idea(Title=BAD_TITLE, Hypothesis="r \u2265 1 \u2192 \u4e2d\u6587 \\input{/etc/passwd} 50% _x_ #1",
                         novelty={"decision": "novel", "reason": "100% new & {unbalanced", "nearest": "kl",
                                  "distance": 0.12, "literature": [{"key": "no_such_key", "title": "x", "score": 1}]})
    paper = writeup.write_paper("lpo", idea, final_info, win_figures, kit.make_context(), tmp_path)
    assert paper["pdf"] is not None, paper["error"]
    assert not paper["repaired"], "escaping alone must make user text safe"
    assert paper["unresolved_refs"] == 0
    text = " ".join(pdf_text(paper["pdf"]).split())
    assert "100% of_under_scores & #hash $x" in text
    assert "\\input{/etc/passwd}" in text  # shown, not executed


def test_an_invalid_formula_is_repaired_from_the_expression_tree(tmp_path, win_experiment, win_figures, kit):
    _, final_info = win_experiment
    idea = kit.make_idea(expression_latex=r"\frac{")
    paper = writeup.write_paper("lpo", idea, final_info, win_figures, kit.make_context(), tmp_path)
    assert paper["repaired"] is True
    assert paper["pdf"] is not None and paper["pages"] >= 4
    assert paper["formula_source"] == "tree"
    assert paper["repair_reason"].startswith("! ")
    log = Path(paper["log"]).read_text()
    assert "attempt 1 (normal)" in log and "attempt 2 (repair" in log


def test_an_invalid_formula_without_a_tree_is_shown_verbatim(tmp_path, win_experiment, win_figures, kit):
    _, final_info = win_experiment
    idea = kit.make_idea(expression_latex=r"\frac{r}{", expression=None)
    paper = writeup.write_paper("lpo", idea, final_info, win_figures, kit.make_context(), tmp_path)
    assert paper["repaired"] and paper["pdf"] is not None
    assert paper["formula_source"] == "verbatim"
    assert "\\frac{r}{" in pdf_text(paper["pdf"])


def test_a_failure_the_repair_cannot_fix_keeps_tex_and_log(tmp_path, win_experiment, win_figures, kit, monkeypatch):
    _, final_info = win_experiment
    broken = writeup.Tex("\\begin{equation}\\undefinedmacro{r}\\end{equation}\n")
    monkeypatch.setattr(writeup, "candidate_formula", lambda idea, safe, **_: (broken, "given"))
    paper = writeup.write_paper("lpo", kit.make_idea(), final_info, win_figures, kit.make_context(), tmp_path)
    assert paper["pdf"] is None and paper["repaired"] is True
    assert paper["error"].startswith("! Undefined control sequence")
    assert Path(paper["tex"]).exists() and "\\undefinedmacro" in Path(paper["tex"]).read_text()
    log = Path(paper["log"]).read_text()
    assert "attempt 2" in log and "[first error] ! Undefined control sequence" in log
    assert not (tmp_path / "paper.pdf").exists()


def test_missing_latexmk_is_a_clear_error(tmp_path, win_experiment, kit, monkeypatch):
    _, final_info = win_experiment
    monkeypatch.setattr(writeup, "LATEXMK", ["latexmk-not-installed-here", "paper.tex"])
    paper = writeup.write_paper("lpo", kit.make_idea(), final_info, [], kit.make_context(), tmp_path)
    assert paper["pdf"] is None and "latexmk not found" in paper["error"]
    assert Path(paper["tex"]).exists() and Path(paper["log"]).exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50% of a_b & {c}", r"50\% of a\_b \& \{c\}"),
        ("back\\slash ~ ^ $ #", r"back\textbackslash{}slash \textasciitilde{} \textasciicircum{} \$ \#"),
        ("line\nbreak\t tab", "line break tab"),
        ("r \u2265 1", r"r \ensuremath{\geq} 1"),
        ("caf\u00e9 \u4e2d", "caf\u00e9"),
    ],
)
def test_escape_tex(text, expected):
    assert writeup.escape_tex(text) == expected


def test_number_formats():
    assert writeup.fmt_num(0.12345) == "0.123"
    assert writeup.fmt_num(-0.0123) == r"\ensuremath{-}0.012"
    assert writeup.fmt_num(-0.0001) == "0.000"  # no negative zero
    assert writeup.fmt_signed(0.05) == "+0.050"
    assert writeup.fmt_p(0.0004) == r"\ensuremath{<}\,0.001" and writeup.fmt_p(0.0412) == "0.041"
    assert writeup.fmt_num(float("nan")) == "--"


def test_formulas_with_file_access_are_not_typeset(kit):
    idea = kit.make_idea(expression_latex=r"\input{/etc/passwd}")
    formula, source = writeup.candidate_formula(idea, safe=False)
    assert source == "tree" and "passwd" not in formula


def test_references_are_real_and_consistent():
    keys = writeup.bib_keys(BIB)
    summaries = json.loads(REFS.read_text())
    assert len(keys) >= 10 and len(set(keys)) == len(keys)
    assert {e["key"] for e in summaries} == set(keys)
    assert all(e["title"] and len(e["summary"]) > 40 for e in summaries)
    bib = BIB.read_text()
    for key in ("schulman2017ppo", "lu2022dpo", "kuba2022mirror", "jackson2024temporally", "pignatelli2024navix",
                "chevalierboisvert2023minigrid", "lange2022gymnax", "lange2022evosax", "lu2024discopop",
                "lu2024aiscientist", "schulman2016gae"):
        assert key in keys
    for entry in re.split(r"\n@", bib)[1:]:
        assert re.search(r"author\s*=", entry) and re.search(r"year\s*=\s*\{\d{4}\}", entry)


LITERAL_CITE = re.compile(r"\\cite[tp]?\*?(?:\[[^\]]*\])*\{([^}]+)\}|\\citealp\{([^}]+)\}")
CITE_CALL = re.compile(r"\bcitet?\(([^)]*)\)")


def test_every_citation_in_the_templates_is_in_the_bib():
    """lpo's texts cite its bib; generic texts cite only through cite(), which drops keys a template's bib lacks."""
    keys = set(writeup.bib_keys(BIB))
    cited = set()
    for path in (ROOT / "prompts" / "templates" / "lpo" / "paper").rglob("*.j2"):
        for group in LITERAL_CITE.findall(path.read_text()):
            cited |= {k.strip() for g in group for k in g.split(",") if k.strip()}
    assert cited and cited <= keys, cited - keys
    called = set()
    for path in (ROOT / "prompts" / "paper").rglob("*.j2"):
        assert not LITERAL_CITE.search(path.read_text()), f"{path.name}: a literal citation in a generic text"
        for args in CITE_CALL.findall(path.read_text()):
            called |= set(re.findall(r"[\"']([^\"']+)[\"']", args))
    assert called and called <= keys, called - keys


# ------------------------------------------------------------------------------------- the template contract's text
GENERIC_TEXT = [ROOT / "prompts" / stage for stage in ("paper", "review", "llm")]
ONE_TEMPLATE = re.compile(r"\bPPO\b|(?i:\bdrift)|(?i:\bmirror)|(?i:\bnavix)")
PARAMETERS = {"learning_rate": 0.0003, "widths": [64, 64], "schedule_name": "cosine_with_warmup",
              "table": list(range(100))}


def test_generic_text_mentions_no_single_template():
    files = [p for folder in GENERIC_TEXT for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        hits = ONE_TEMPLATE.findall(path.read_text())
        assert not hits, f"{path.relative_to(ROOT)} mentions {sorted(set(hits))}"
    assert not (ROOT / "prompts" / "llm" / "templates").exists()  # the task description lives with its template


@pytest.fixture(scope="module")
def prompts_copy(tmp_path_factory):
    """A copy of prompts/ with an lpo paper override and a second template's review override."""
    import shutil

    root = tmp_path_factory.mktemp("prompts") / "prompts"
    shutil.copytree(ROOT / "prompts", root)
    (root / "templates" / "lpo" / "paper" / "caption_tests.tex.j2").write_text("OVERRIDDEN tests of << label >>.\n")
    (root / "templates" / "other" / "review").mkdir(parents=True)
    (root / "templates" / "other" / "review" / "limitations.md.j2").write_text("- OTHER limitation.\n")
    (root / "templates" / "other" / "llm").mkdir(parents=True)
    (root / "templates" / "other" / "llm" / "system.j2").write_text("OTHER system prompt\n")
    return root


def test_a_template_folder_overrides_the_generic_text(prompts_copy, monkeypatch, win_experiment, kit):
    from tasks import review
    from tasks.runtime import text
    from tasks.runtime.llm import render

    monkeypatch.setattr(text, "PROMPTS", prompts_copy)
    env = writeup.make_env("lpo")
    assert Path(env.get_template("caption_tests.tex.j2").filename).parent == prompts_copy / "templates/lpo/paper"
    assert Path(env.get_template("introduction.tex.j2").filename).parent == prompts_copy / "templates/lpo/paper"
    assert Path(env.get_template("caption_results.tex.j2").filename).parent == prompts_copy / "paper"
    assert Path(writeup.make_env("other").get_template("caption_tests.tex.j2").filename).parent == \
        prompts_copy / "paper"
    _, final_info = win_experiment
    facts = writeup.build_facts("lpo", kit.make_idea(), final_info, [], kit.make_context(), [])
    assert env.get_template("caption_tests.tex.j2").render(**facts) == "OVERRIDDEN tests of Annealed clip.\n"
    other = review.review_paper(kit.make_idea(), final_info, {"pdf": None}, "other")
    generic = review.review_paper(kit.make_idea(), final_info, {"pdf": None}, "yet_another")
    assert other["Limitations"] == ["OTHER limitation."] and generic["Limitations"] != other["Limitations"]
    assert render("system.j2", "other") == "OTHER system prompt"
    assert render("system.j2", "lpo") == render("system.j2") != "OTHER system prompt"


@pytest.fixture(scope="module")
def minimised(kit):
    """The candidate sits below every baseline: a win when the metric is minimised, a loss when it is maximised."""
    results = kit.synthetic_results(effect=0.06, seed=3, maximize=False)
    return kit.final_info_from(results, maximize=False), kit.final_info_from(results, maximize=True)


def _abstract(template_name: str, facts: dict) -> str:
    return " ".join(writeup.make_env(template_name).get_template("abstract.tex.j2").render(**facts).split())


def test_the_metric_direction_decides_the_paper_wording(minimised, kit):
    as_min, as_max = minimised
    idea, ctx = kit.make_idea(), kit.make_context()
    low = writeup.build_facts("no_such_template", idea, as_min, [], ctx, [])
    assert low["metric_direction"] == "minimised" and low["higher"] == "lower"
    assert [r["direction"] for r in low["settings"]] == ["better"] * 3
    assert all(r["rank"] == 1 and r["top"] == kit.CANDIDATE and r["difference"] < 0 < r["relative"]
               for r in low["settings"])
    assert low["train_outcome"] == "better" and low["held_outcome"] == "better"
    assert "significantly better than the strongest baseline" in _abstract("no_such_template", low)
    high = writeup.build_facts("no_such_template", idea, as_max, [], ctx, [])
    assert high["metric_direction"] == "maximised"
    assert [r["direction"] for r in high["settings"]] == ["worse"] * 3
    assert all(r["rank"] == r["n_methods"] == 5 and r["top"] != kit.CANDIDATE and r["relative"] < 0
               for r in high["settings"])
    assert "significantly worse than the strongest baseline" in _abstract("no_such_template", high)


def test_a_template_with_a_minimised_metric_ranks_by_it(minimised, kit, monkeypatch):
    import dataclasses

    from jaxlib_kernels.templates import Metric
    from tasks.runtime import text

    ctx = kit.make_context()
    template = dataclasses.replace(  # the lpo template with its metric turned around
        text.template_or_none("lpo"), name="lpo_min", metric=Metric("final_loss", "a loss", maximize=False))
    monkeypatch.setattr(text, "template_or_none", lambda name: template if name == "lpo_min" else None)
    facts = writeup.build_facts("lpo_min", kit.make_idea(), minimised[0], [], ctx, [])
    assert facts["metric"] == "a loss" and facts["metric_direction"] == "minimised"
    assert [r["direction"] for r in facts["settings"]] == ["better"] * 3 and facts["settings"][0]["rank"] == 1
    assert facts["plugin_signature"] == template.plugin.signature and facts["formula_lhs"] == template.formula_lhs
    assert facts["final_label"] == template.schema.final_label and facts["budget_unit"] == "environment steps"
    short = next(r for r in facts["settings"] if r["name"] == "empty5_short")
    assert short["steps"] == facts["budget"] // 2  # the profile's budget times the setting's budget_scale


def test_baseline_formulas_come_from_the_contract():
    from jaxlib_kernels.templates import Baseline

    rows = writeup._baseline_formulas({
        "a": Baseline("a", "Alpha", "source", latex=r"\alpha x"),
        "b": Baseline("b", "Beta", "source", description="tuned by hand"),
        "c": Baseline("c", "Gamma", "source"),
    }, {}, "g(x)")
    assert [r["label"] for r in rows] == ["Alpha", "Beta", "Gamma"]
    assert r"\fitmath{g(x) = \alpha x}" in rows[0]["formula"]
    assert "tuned by hand" in rows[1]["formula"] and "g(x)" not in rows[1]["formula"]
    assert "Gamma" in rows[2]["formula"]


def test_a_parametric_candidate_with_a_minimised_metric_gets_a_generic_paper(tmp_path, minimised, win_figures, kit):
    as_min, _ = minimised
    idea = kit.make_idea(kind="parametric", expression=None, expression_latex=None, candidate=PARAMETERS)
    paper = writeup.write_paper("no_such_template", idea, as_min, win_figures, kit.make_context(), tmp_path)
    assert paper["pdf"] is not None, paper["error"]
    assert not paper["repaired"] and paper["formula_source"] == "parameters"
    assert paper["unresolved_refs"] == 0 and paper["table_numbers_found"] and paper["figures"] >= 2
    text = " ".join(pdf_text(paper["pdf"]).split())
    assert "significantly better than the strongest baseline" in text and "minimised" in text
    assert "Parameter Value" in text and "learning_rate 0.0003" in text and "cosine_with_warmup" in text
    assert "[0, 1, 2, 3" in text and "..." in text  # a long value is cut
    tex = Path(paper["tex"]).read_text()
    for info in as_min.values():  # the best (lowest) mean of every setting is bold
        assert f"\\textbf{{{min(info['means'].values()):.3f}}}" in tex
        assert f"\\textbf{{{max(info['means'].values()):.3f}}}" not in tex
    for fig in win_figures:  # every figure, the template's own too, is referenced by the generic text
        assert f"\\ref{{fig:{fig['name'].replace('_', '-')}}}" in tex
