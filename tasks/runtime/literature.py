"""The literature client of the LLM backend's novelty stage: Semantic Scholar and OpenAlex over HTTP.

The AI Scientist (Lu et al., 2024) searches Semantic Scholar and is often stopped by its rate limit; here each
search backs off on HTTP 429/5xx (honouring ``Retry-After``), sends the optional key ``SEMANTIC_SCHOLAR_API_KEY``,
falls over to OpenAlex, and when neither answers falls back, quickly and visibly, to the template's local BM25
index (``tasks.novelty.literature``). A source that fails to connect is not tried again in the same process, so a
machine without internet pays the (short) connect timeout once.

Environment: ``SCIENTIST_S2_API_BASE`` (default https://api.semanticscholar.org/graph/v1),
``SCIENTIST_OPENALEX_API_BASE`` (default https://api.openalex.org), ``SCIENTIST_LIT_TIMEOUT`` (s, default 10),
``SCIENTIST_LIT_CONNECT_TIMEOUT`` (s, default 3), ``SCIENTIST_LIT_RETRIES`` (default 3),
``SCIENTIST_LIT_BACKOFF`` (s, default 1), ``OPENALEX_MAILTO`` (OpenAlex's polite pool).
"""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from typing import Any

import httpx

from tasks.runtime.llm import redact

S2_DEFAULT = "https://api.semanticscholar.org/graph/v1"
OPENALEX_DEFAULT = "https://api.openalex.org"
_DOWN: dict[str, str] = {}  # base URL -> why it is considered unreachable in this process
_DOWN_LOCK = threading.Lock()


def _f(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


class SourceDown(RuntimeError):
    """A literature source cannot be used now (unreachable, or still rate-limited after the retries)."""


def _get(base: str, path: str, params: dict, headers: dict | None = None) -> Any:
    with _DOWN_LOCK:
        if base in _DOWN:
            raise SourceDown(_DOWN[base])
    timeout = httpx.Timeout(_f("SCIENTIST_LIT_TIMEOUT", 10), connect=_f("SCIENTIST_LIT_CONNECT_TIMEOUT", 3))
    retries = int(_f("SCIENTIST_LIT_RETRIES", 3))
    backoff = _f("SCIENTIST_LIT_BACKOFF", 1.0)
    last = ""
    for attempt in range(retries + 1):
        try:
            r = httpx.get(base.rstrip("/") + path, params=params, headers=headers or {}, timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, OSError) as exc:
            why = f"unreachable ({type(exc).__name__}: {redact(exc)})"
            with _DOWN_LOCK:
                _DOWN[base] = why
            raise SourceDown(why) from None
        except httpx.HTTPError as exc:  # read timeout and the like: retry
            last = f"{type(exc).__name__}"
        else:
            if r.status_code == 200:
                return r.json()
            last = f"HTTP {r.status_code}"
            if r.status_code != 429 and r.status_code < 500:
                raise SourceDown(last)
            wait = r.headers.get("Retry-After")
            if wait and wait.isdigit():
                time.sleep(min(float(wait), 30.0))
                continue
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    raise SourceDown(f"no answer after {retries + 1} attempts ({last})")


def _key(authors: list[str], year: Any, title: str) -> str:
    surname = re.sub(r"[^a-z]", "", (authors[0].split()[-1] if authors else "anon").lower()) or "anon"
    word = next((w for w in re.findall(r"[a-z]+", title.lower()) if len(w) > 3), "paper")
    return f"{surname}{year or ''}{word}"


def _paper(source: str, title: str, authors: list[str], year: Any, venue: str, abstract: str, citations: Any,
           url: str | None) -> dict:
    return {"key": _key(authors, year, title), "title": title, "authors": authors, "year": year,
            "venue": venue or "", "abstract": (abstract or "")[:1200], "citations": citations, "url": url,
            "source": source}


def search_semantic_scholar(query: str, limit: int = 5) -> list[dict]:
    base = os.environ.get("SCIENTIST_S2_API_BASE") or S2_DEFAULT
    headers = {}
    if os.environ.get("SEMANTIC_SCHOLAR_API_KEY"):
        headers["x-api-key"] = os.environ["SEMANTIC_SCHOLAR_API_KEY"]
    data = _get(base, "/paper/search", {"query": query, "limit": limit,
                                        "fields": "title,authors,year,venue,abstract,citationCount,url"}, headers)
    out = []
    for p in data.get("data") or []:
        if not p.get("title"):
            continue
        out.append(_paper("semantic_scholar", p["title"], [a.get("name", "") for a in p.get("authors") or []],
                          p.get("year"), p.get("venue"), p.get("abstract"), p.get("citationCount"), p.get("url")))
    return out


def _openalex_abstract(inv: dict | None) -> str:
    if not inv:
        return ""
    pos = sorted((i, w) for w, idx in inv.items() for i in idx)
    return " ".join(w for _, w in pos)


def search_openalex(query: str, limit: int = 5) -> list[dict]:
    base = os.environ.get("SCIENTIST_OPENALEX_API_BASE") or OPENALEX_DEFAULT
    params = {"search": query, "per-page": limit}
    if os.environ.get("OPENALEX_MAILTO"):
        params["mailto"] = os.environ["OPENALEX_MAILTO"]
    data = _get(base, "/works", params)
    out = []
    for w in data.get("results") or []:
        title = w.get("title") or w.get("display_name")
        if not title:
            continue
        venue = ((w.get("primary_location") or {}).get("source") or {}).get("display_name") or ""
        out.append(_paper("openalex", title, [(a.get("author") or {}).get("display_name", "")
                                               for a in w.get("authorships") or []],
                          w.get("publication_year"), venue, _openalex_abstract(w.get("abstract_inverted_index")),
                          w.get("cited_by_count"), w.get("id")))
    return out


def search(query: str, template_name: str, limit: int = 5) -> dict:
    """Search Semantic Scholar, then OpenAlex, then the local index; ``{"source", "papers", "notes"}``."""
    notes = []
    for name, fn in (("semantic_scholar", search_semantic_scholar), ("openalex", search_openalex)):
        try:
            return {"source": name, "papers": fn(query, limit), "notes": notes}
        except SourceDown as exc:
            notes.append(f"{name}: {exc}")
    from jaxlib_kernels.templates import make
    from tasks.novelty import literature

    hits = literature(make(template_name), query, k=limit)
    papers = [{"key": h["key"], "title": h["title"], "authors": [], "year": None, "venue": "", "abstract": "",
               "citations": None, "url": None, "source": "local", "score": h["score"]} for h in hits]
    notes.append("fell back to the local reference index (BM25 over prompts/templates/<t>/references.json)")
    return {"source": "local", "papers": papers, "notes": notes}


def _bib_escape(text: str) -> str:
    """BibTeX-safe text: folded to ASCII (pdflatex stops at characters it has no glyph set up for), no specials."""
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", re.sub(r"[{}\\%&#$_^~]", " ", folded)).strip()


def bibtex(papers: list[dict], known: set[str]) -> tuple[str, dict[str, str]]:
    """BibTeX entries for papers the client returned (local ones are in references.bib already); keys made
    unique against ``known``. Returns the text and the map paper key -> bib key."""
    entries, keys = [], {}
    taken = set(known)
    for p in papers:
        if p.get("source") == "local":
            if p["key"] in known:
                keys[p["key"]] = p["key"]
            continue
        key, i = p["key"], 2
        while key in taken:
            key, i = f"{p['key']}{chr(ord('a') + i - 2)}", i + 1
        taken.add(key)
        keys[p["key"]] = key
        authors = " and ".join(n for n in (_bib_escape(a) for a in p.get("authors") or [] if a) if n) or "Anonymous"
        fields = [f"  title = {{{_bib_escape(p['title'])}}}", f"  author = {{{authors}}}"]
        if p.get("year"):
            fields.append(f"  year = {{{int(p['year'])}}}")
        if p.get("venue"):
            fields.append(f"  journal = {{{_bib_escape(p['venue'])}}}")
        entries.append(f"@article{{{key},\n" + ",\n".join(fields) + "\n}\n")
    return "\n".join(entries), keys
