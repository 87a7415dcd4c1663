"""The objective figure and page check (tasks/figcheck.py): each fault caught, its fixed version passing; the
curves and final values of make_plots pass; the writeup loop redraws a failing figure and records its rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pymupdf
import pytest

from jaxlib_kernels.figures import CANDIDATE_COLOR, PALETTE, TEXT_WIDTH_IN, plt, save, style, subplots
from tasks import figcheck

X = np.linspace(0, 1, 50)


def _checks(fig, **kw) -> set[str]:
    found = figcheck.check_figure(fig, "fig", **kw)
    plt.close(fig)
    return {f["check"] for f in found}


def _two_series(ax, colors=(PALETTE[0], CANDIDATE_COLOR)):
    ax.plot(X, X, color=colors[0], label="a")
    ax.plot(X, X ** 2, color=colors[1], label="b")


def test_text_that_prints_below_6_pt_is_caught_and_the_figure_drawn_at_its_printed_width_passes():
    with style():
        wide = plt.figure(figsize=(12.5, 3), layout="constrained")  # 8 pt text at 12.5 in, printed at 6.5 in: 4.2
        wide.add_subplot().plot(X, X)
        assert "text_size" in _checks(wide, placed_width_in=TEXT_WIDTH_IN)
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].plot(X, X)
        assert "text_size" not in _checks(fig, placed_width_in=TEXT_WIDTH_IN)


def test_overlapping_labels_are_caught_and_fewer_rotated_labels_pass():
    names = [f"a long method name {i}" for i in range(8)]
    with style():
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].scatter(range(8), range(8))
        axes[0, 0].set_xticks(range(8), names)
        assert "overlapping_text" in _checks(fig)
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].scatter(range(8), range(8))
        axes[0, 0].set_yticks(range(8), names)  # the names on the axis that has room for them
        assert "overlapping_text" not in _checks(fig)


def test_text_off_the_figure_is_caught():
    with style():
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].plot(X, X)
        fig.text(0.98, 0.5, "a note that runs off the right edge")
        assert "clipped_text" in _checks(fig)


def test_an_empty_panel_is_caught_and_a_hidden_one_passes():
    with style():
        fig, axes = subplots(1, 2, 2.0)
        axes[0, 0].plot(X, X)
        assert "empty_axes" in _checks(fig)
        fig, axes = subplots(1, 2, 2.0)
        axes[0, 0].plot(X, X)
        axes[0, 1].set_visible(False)
        assert _checks(fig) == set()


def test_several_series_without_a_legend_are_caught_and_a_legend_under_the_panels_passes():
    with style():
        fig, axes = subplots(1, 1, 2.0)
        _two_series(axes[0, 0])
        assert "no_legend" in _checks(fig)
        fig, axes = subplots(1, 1, 2.0)
        _two_series(axes[0, 0])
        fig.legend(loc="outside lower center", ncol=2)
        assert _checks(fig) == set()


def test_a_legend_over_the_data_is_caught():
    with style():
        fig, axes = subplots(1, 1, 2.0)
        _two_series(axes[0, 0])
        axes[0, 0].legend(loc="center", fontsize=7, markerscale=3, borderpad=2)
        assert "legend_over_data" in _checks(fig)


def test_seeds_without_an_interval_are_caught_and_a_band_or_error_bars_pass():
    with style():
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].plot(X, X)
        assert "no_interval" in _checks(fig, n_seeds=3)
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].plot(X, X)
        axes[0, 0].fill_between(X, X - 0.1, X + 0.1, alpha=0.2)
        assert _checks(fig, n_seeds=3) == set()
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].errorbar([0.0], [1.0], xerr=[[0.2], [0.3]])
        assert _checks(fig, n_seeds=3) == set()
        fig, axes = subplots(1, 1, 2.0)
        axes[0, 0].plot(X, X)
        assert _checks(fig, n_seeds=1) == set()  # one seed: nothing to interval


def test_red_and_green_are_caught_and_the_okabe_ito_palette_passes():
    with style():
        fig, axes = subplots(1, 1, 2.0)
        _two_series(axes[0, 0], colors=("#d62728", "#2ca02c"))  # tab10's red and green
        fig.legend(loc="outside lower center", ncol=2)
        assert "colour_blind" in _checks(fig)
    colors = [CANDIDATE_COLOR, *PALETTE]
    assert min(figcheck.cvd_distance(a, b) for i, a in enumerate(colors) for b in colors[i + 1:]) \
        >= figcheck.MIN_CVD_DISTANCE


def test_the_curves_and_final_values_are_drawn_at_the_text_width_and_pass_the_check(win_figures):
    for fig in win_figures:
        assert fig["width_in"] == pytest.approx(TEXT_WIDTH_IN)
        assert fig["findings"] == [], fig["findings"]
        with pymupdf.open(fig["pdf"]) as doc:  # the vector twin at the same size, its text at 6 pt or more
            assert doc[0].rect.width == pytest.approx(TEXT_WIDTH_IN * 72, abs=0.5)
        assert min(s for _, s, _ in figcheck.text_sizes(Path(fig["pdf"]))) >= figcheck.MIN_PT


def test_a_figure_never_cited_and_the_same_figure_twice_are_caught(tmp_path, win_figures):
    (tmp_path / "figures").mkdir()
    png = Path(win_figures[0]["png"])
    for name in ("a.png", "b.png"):
        (tmp_path / "figures" / name).write_bytes(png.read_bytes())
    tex = ("\\includegraphics{figures/a.png}\\label{fig:a}\n\\includegraphics{figures/b.png}\\label{fig:b}\n"
           "Figure~\\ref{fig:a} shows it.")
    found = figcheck.check_citations(tmp_path, tex, tmp_path / "paper.pdf", {})
    assert {(f["check"], f["target"]) for f in found} == {("uncited_figure", "fig:b"),
                                                         ("duplicate_figure", "figures/b.png")}


def _pdf(path: Path, lines_per_page: list[int]) -> Path:
    doc = pymupdf.open()
    for n in lines_per_page:
        page = doc.new_page(width=612, height=792)
        for i in range(n):
            page.insert_text((72, 84 + 13.6 * i), "A line of text that runs across the text block " * 2, fontsize=11)
    doc.save(path)
    return path


def test_a_page_much_emptier_than_a_text_page_is_caught_but_the_last_page_may_be(tmp_path):
    full = _pdf(tmp_path / "full.pdf", [47, 47, 5])
    assert figcheck.check_pages(tmp_path, "", full, {}) == []
    half = _pdf(tmp_path / "half.pdf", [47, 20, 47, 5])
    assert [f["target"] for f in figcheck.check_pages(tmp_path, "", half, {})] == ["page 2"]


def test_text_printed_below_6_pt_in_the_paper_is_caught(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 100), "normal", fontsize=11)
    page.insert_text((72, 120), "shrunk table", fontsize=5)
    doc.save(tmp_path / "paper.pdf")
    found = figcheck.check_printed_text(tmp_path, "", tmp_path / "paper.pdf", {})
    assert [f["check"] for f in found] == ["text_size"] and "5.0 pt" in found[0]["message"]


def test_a_check_that_raises_is_a_finding_not_an_abort(tmp_path):
    def broken(*_):
        raise ValueError("no")

    found = figcheck.run_checks(tmp_path, "", tmp_path / "x.pdf", {}, [broken])
    assert [(f["check"], f["target"]) for f in found] == [("check_failed", "broken")]


def test_the_writeup_loop_redraws_a_figure_with_tiny_text_and_records_each_round(tmp_path, win_experiment, kit):
    from tasks.writeup import write_paper_loop

    _, final_info = win_experiment

    def draw(font_pt: float) -> list[dict]:  # drawn 12 in wide at first: its text prints below 6 pt
        width = 12.0 if font_pt <= 8.0 else TEXT_WIDTH_IN
        with style(font_pt):
            fig = plt.figure(figsize=(width, 3), layout="constrained")
            ax = fig.add_subplot()
            ax.plot(X, X)
            ax.fill_between(X, X - 0.1, X + 0.1, alpha=0.2)
            found = figcheck.check_figure(fig, "curve", placed_width_in=TEXT_WIDTH_IN, n_seeds=2)
            png, pdf = save(fig, tmp_path / "figures", "curve")
        return [{"name": "curve", "png": png, "pdf": pdf, "caption": "A curve (Figure 1).", "width_in": TEXT_WIDTH_IN,
                 "findings": found}]

    (tmp_path / "figures").mkdir()
    seen = []

    def revise(tex: str, findings: list[dict]) -> str | None:
        seen.append([f["check"] for f in findings])
        return None

    paper = write_paper_loop("lpo", kit.make_idea(), final_info, draw(8.0), kit.make_context(), tmp_path / "paper",
                             redraw=draw, revise=revise)
    record = json.loads(Path(paper["checks"]).read_text())
    first = record["rounds"][0]
    assert {(f["check"], f["target"]) for f in first["findings"]} >= {("text_size", "curve")}
    assert any("redrew" in a for a in first["actions"])
    assert not [f for f in record["final"] if f["target"] == "curve"], record["final"]
    assert seen and "text_size" in seen[0]
    assert paper["pdf"] and paper["check_errors"] == sum(f["severity"] == "error" for f in record["final"])


def test_a_wide_formula_and_a_wide_table_are_fitted_without_text_below_6_pt(tmp_path):
    from tasks.writeup import PREAMBLE, compile_latex

    formula = " + ".join(rf"\frac{{\alpha_{{{i}}} x^{{2}}}}{{1 + \exp(-\beta_{{{i}}} r)}}" for i in range(9))
    row = " & ".join(f"column {i} with words" for i in range(9))
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[11pt]{article}\\usepackage[margin=1in]{geometry}\\usepackage{graphicx,amsmath}\n"
        + PREAMBLE + "\\begin{document}\n\\begin{equation}\\fitmath{f = " + formula + "}\\end{equation}\n"
        "\\begin{table}[h]\\centering\\small\\fitwidth{\\begin{tabular}{" + "l" * 9 + "}" + row + "\\\\ $a^\\dagger$"
        "\\end{tabular}}\\end{table}\n\\end{document}\n")
    ok, log = compile_latex(tmp_path)
    assert ok, log[-2000:]
    sizes = [s for _, s, _ in figcheck.text_sizes(tmp_path / "paper.pdf")]
    assert min(sizes) >= figcheck.MIN_PT - 0.05, sorted(sizes)[:5]
