"""The behaviours of everything already known (baselines, archived candidates), by name: what novelty is
measured against, in ideation, the offline searches and the novelty stage alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


def _run_key(row: dict) -> str:
    return f"{row['idea']} ({row.get('run_id', 'archive')})"


def known_behaviours(baselines: Mapping[str, Any], archive_rows: Iterable[dict], of_baseline: Callable[[Any], Any],
                     of_row: Callable[[dict], Any], *, baseline_key: Callable[[str], str] = str,
                     row_key: Callable[[dict], str] = _run_key, skip_errors: bool = False) -> dict[str, Any]:
    """``{name: behaviour}`` of every baseline (``of_baseline(baseline)``) and every archive row (``of_row(row)``);
    a None behaviour is left out, and with ``skip_errors`` so is a row whose ``of_row`` raises (an archived
    candidate that no longer loads)."""
    known = {}
    for name, baseline in baselines.items():
        value = of_baseline(baseline)
        if value is not None:
            known[baseline_key(name)] = value
    for row in archive_rows:
        try:
            value = of_row(row)
        except Exception:  # where asked, an archived candidate that no longer loads is skipped
            if not skip_errors:
                raise
            continue
        if value is not None:
            known[row_key(row)] = value
    return known


def probed(template, archive_rows: Iterable[dict], row_key: Callable[[dict], str] = _run_key) -> dict[str, Any]:
    """The template's probe (``Template.probe_text``) of every baseline's and archived candidate's text."""
    return known_behaviours(template.baselines, archive_rows, lambda b: template.probe_text(b.source),
                            lambda r: template.probe_text(r["source"]) if r.get("source") else None,
                            baseline_key=lambda n: f"baseline {n}", row_key=row_key, skip_errors=True)


def nearest(value, known: Mapping[str, Any], distance: Callable[[Any, Any], float]) -> tuple[str, float]:
    """The name of the known entry closest to ``value`` and its distance."""
    return min(((k, distance(value, v)) for k, v in known.items()), key=lambda kv: kv[1])
