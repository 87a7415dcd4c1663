"""The record of an idea's research tree: nodes, the best node of each stage, the final candidate, tuning and
ablation tables, in one JSON file (``<idea_dir>/tree/tree.json``; the run's tuned baselines in
``runs/<id>/tree/baselines.json``), written atomically after every population call.

A node's id is a stable hash of what it evaluates (:func:`node_id`: stage, kind, method, candidate text,
hyperparameters and the search's settings, seeds and budgets), so a tree killed half-way and grown again finds its
finished nodes by id and evaluates only the others. ``computed_in`` is the number of the growth (1 for the first
call on the file, 2 for its first resume...) that evaluated the node.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxlib_kernels.files import write_atomic


def _plain(value: Any) -> Any:
    """JSON-safe values: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def node_id(stage: str, kind: str, method: str, candidate: str, hparams: dict | None, search: dict) -> str:
    """The stable id of a node: a hash of what it evaluates and where (the same inputs, the same id)."""
    payload = json.dumps(_plain([stage, kind, method, candidate, dict(sorted((hparams or {}).items())), search]),
                         sort_keys=True, separators=(",", ":"))
    return "n" + hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Node:
    """One node of the tree. ``metric``: the metric per search setting, one value per search seed (None where
    nothing was measured); ``score``: their mean (None when buggy); ``cost``: seeds x the search budgets in the
    template's budget unit (0 for a node the gate rejected); ``source``: who proposed it (``offline``, ``llm``,
    ``llm-fallback`` with the reason in ``why``); ``tie_break``: set on a stage's best node when a model chose it
    among exactly equal scores; ``round``: the improve round that proposed it."""

    id: str
    parent: str | None
    stage: str
    kind: str
    method: str
    role: str
    candidate: str
    hparams: dict = dataclasses.field(default_factory=dict)
    label: str = ""
    metric: dict = dataclasses.field(default_factory=dict)
    score: float | None = None
    buggy: bool = False
    why: str | None = None
    cost: int = 0
    source: str = "offline"
    tie_break: dict | None = None
    round: int | None = None
    computed_in: int | None = None

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Node:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class TreeRecord:
    """``tree.json``: the header (idea, template, metric, search, replication seeds, budgets), the nodes in the
    order they were made, ``best`` (stage -> node id), ``final``, ``tuning``, ``ablation``, ``stages_done``,
    ``view`` and ``growths`` (how many times a tree was grown on this file)."""

    def __init__(self, path: str | os.PathLike, data: dict):
        self.path = Path(path)
        self.data = data
        self.data.setdefault("nodes", [])
        for key in ("best", "tuning"):
            self.data.setdefault(key, {})
        self.data.setdefault("ablation", [])
        self.data.setdefault("stages_done", [])
        self.data.setdefault("final", None)
        self.data.setdefault("view", {})
        self.data.setdefault("growths", 0)
        self._index = {n["id"]: i for i, n in enumerate(self.data["nodes"])}

    @classmethod
    def open(cls, path: str | os.PathLike, header: dict) -> TreeRecord:
        """The record at ``path`` (its nodes kept for resumption, its header refreshed from ``header``), or a new
        one; either way one more growth is counted."""
        path = Path(path)
        data = json.loads(path.read_text()) if path.exists() else {}
        record = cls(path, {**data, **_plain(header)})
        record.data["growths"] = int(record.data.get("growths", 0)) + 1
        return record

    @classmethod
    def load(cls, path: str | os.PathLike) -> TreeRecord:
        return cls(path, json.loads(Path(path).read_text()))

    @property
    def growth(self) -> int:
        return int(self.data["growths"])

    @property
    def nodes(self) -> list[Node]:
        return [Node.from_dict(n) for n in self.data["nodes"]]

    def get(self, nid: str) -> Node | None:
        i = self._index.get(nid)
        return None if i is None else Node.from_dict(self.data["nodes"][i])

    def add(self, node: Node) -> None:
        """Add a node, or replace the node of the same id."""
        if node.id in self._index:
            self.data["nodes"][self._index[node.id]] = node.to_dict()
        else:
            self._index[node.id] = len(self.data["nodes"])
            self.data["nodes"].append(node.to_dict())

    def of_stage(self, stage: str) -> list[Node]:
        return [n for n in self.nodes if n.stage == stage]

    def done(self, stage: str) -> None:
        if stage not in self.data["stages_done"]:
            self.data["stages_done"].append(stage)

    def save(self) -> Path:
        return write_atomic(self.path, json.dumps(_plain(self.data), indent=1))
