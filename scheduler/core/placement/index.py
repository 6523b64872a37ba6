"""The node index: the fleet as columns, so a job meets every node in a few vector operations.

`place()` spends its time, with the scan, in a Python loop that sends every node through every
filter function and a score (about 2 us a node: 8 ms a job at 4,000 nodes). The index holds the
same facts as arrays in node-id order, so that filtering is a handful of boolean array operations
and scoring a handful of arithmetic ones (`indexed.py`), each a single pass in C.

What it holds, per node: site, region and accelerator kind (as small integer codes), accelerator
memory, free slots, whether it is serving and healthy, its marginal power (busy minus idle, never
below zero), its backlog, and per model it serves: that it serves it, the learned rate (if any)
and whether it is warm. Beside the columns, which nodes hold each prompt-prefix block their
engines report (`holding`), so that a job meets only the nodes that hold the start of its
prompt, not every node's set of blocks. What it leaves to others: prices (they come with each call,
`site_table.py`), the scores and the choice (`indexed.py`).

Kept up to date incrementally: `upsert(view)` of a known node rewrites its row in place (a few
microseconds); a node that joins or leaves marks the order stale, and the columns are rebuilt, in
node-id order, on next use (once per burst of joins). `SchedulerCore` keeps one for its nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from scheduler.core.placement.types import NodeView


@dataclass
class ModelColumns:
    """One model's columns, aligned with the index rows."""

    serves: np.ndarray  # bool
    learned: np.ndarray  # bool: the node has a learned rate for this model
    rate: np.ndarray  # float64 tokens/s where learned (0 elsewhere)
    warm: np.ndarray  # bool
    cold_s: np.ndarray  # float64: the node's measured load seconds (NaN: not measured)


class NodeIndex:
    """Columns of node facts in node-id order; see the module docstring."""

    def __init__(self, nodes: Iterable[NodeView] = ()) -> None:
        # A later view of the same node id replaces an earlier one, as in `place()`'s contract.
        self._views: dict[str, NodeView] = {n.node_id: n for n in nodes}
        # Prefix block hash -> ids of the nodes whose engines hold it (kept with every change).
        self._holders: dict[int, set[str]] = {}
        for view in self._views.values():
            self._hold(view.node_id, view.prefix_blocks, frozenset())
        self._stale: dict[str, None] = {}  # known nodes whose row must be rewritten (ordered)
        self._reorder = True  # a node joined or left: rebuild every column
        # Filled by _rebuild().
        self.ids: list[str] = []
        self.views: list[NodeView] = []
        self.pos: dict[str, int] = {}
        self.site_names: list[str] = []
        self.site_code: dict[str, int] = {}
        self.region_code: dict[str, int] = {}
        self.kind_code: dict[str, int] = {}
        self.site: np.ndarray = np.zeros(0, dtype=np.int64)
        self.region: np.ndarray = np.zeros(0, dtype=np.int64)
        self.gpu_kind: np.ndarray = np.zeros(0, dtype=np.int64)
        self.memory_mb: np.ndarray = np.zeros(0)
        self.slots_free: np.ndarray = np.zeros(0)
        self.serving: np.ndarray = np.zeros(0, dtype=bool)
        self.healthy: np.ndarray = np.zeros(0, dtype=bool)
        self.marginal_kw: np.ndarray = np.zeros(0)
        self.backlog_s: np.ndarray = np.zeros(0)
        self.models: dict[str, ModelColumns] = {}
        # Opaque slot for a per-call cache that depends on the sites given (site_table.py).
        self.site_cache: object = None

    @classmethod
    def build(cls, nodes: Iterable[NodeView]) -> NodeIndex:
        return cls(nodes)

    # ----- changes ---------------------------------------------------------------------------

    def upsert(self, view: NodeView) -> None:
        """Add a node or replace what is known about it."""
        old = self._views.get(view.node_id)
        known = old is not None
        self._views[view.node_id] = view
        before = old.prefix_blocks if old is not None else frozenset()
        if view.prefix_blocks is not before and view.prefix_blocks != before:
            self._hold(view.node_id, view.prefix_blocks, before)
        if known and not self._reorder:
            self._stale[view.node_id] = None
        else:
            self._reorder = True

    def remove(self, node_id: str) -> None:
        old = self._views.pop(node_id, None)
        if old is not None:
            self._hold(node_id, frozenset(), old.prefix_blocks)
            self._reorder = True

    def _hold(self, node_id: str, now: frozenset[int], before: frozenset[int]) -> None:
        for block in before - now:
            holders = self._holders.get(block)
            if holders is not None:
                holders.discard(node_id)
                if not holders:
                    del self._holders[block]
        for block in now - before:
            self._holders.setdefault(block, set()).add(node_id)

    # ----- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._views)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._views

    def view(self, node_id: str) -> NodeView:
        return self._views[node_id]

    def refresh(self) -> NodeIndex:
        """Bring the columns up to date with every change; returns self."""
        if self._reorder:
            self._rebuild()
        elif self._stale:
            for node_id in self._stale:
                self._write_row(self.pos[node_id], self._views[node_id])
            self._stale.clear()
        return self

    def holding(self, block: int) -> np.ndarray:
        """Rows, ascending (node-id order), of the nodes whose engines hold prefix `block`."""
        holders = self._holders.get(block)
        if not holders:
            return np.zeros(0, dtype=np.int64)
        self.refresh()
        return np.array(sorted(self.pos[node_id] for node_id in holders), dtype=np.int64)

    def sorted_views(self) -> list[NodeView]:
        """The nodes in id order."""
        return list(self.refresh().views)

    def free_slots(self) -> int:
        """Free slots on nodes that are serving and healthy."""
        if not self._views:
            return 0
        self.refresh()
        usable = self.serving & self.healthy
        return int(self.slots_free[usable].sum())

    # ----- internals -------------------------------------------------------------------------

    def _rebuild(self) -> None:
        ids = sorted(self._views)
        views = [self._views[i] for i in ids]
        n = len(views)
        self.ids, self.views = ids, views
        self.pos = {node_id: i for i, node_id in enumerate(ids)}
        self.site_names, self.site_code, self.region_code, self.kind_code = [], {}, {}, {}
        site, region, kind = self._site, self._region, self._kind
        # One pass over the views; each column is then one conversion in C.
        numbers = np.array(
            [(v.memory_mb, v.slots_free, v.backlog_s, _marginal_kw(v)) for v in views],
            dtype=np.float64,
        ).reshape(n, 4)
        flags = np.array(
            [(bool(v.serving), bool(v.healthy)) for v in views], dtype=bool
        ).reshape(n, 2)
        codes = np.array(
            [(site(v.site), region(v.region), kind(v.gpu_kind)) for v in views], dtype=np.int64
        ).reshape(n, 3)
        self.memory_mb = np.ascontiguousarray(numbers[:, 0])
        self.slots_free = np.ascontiguousarray(numbers[:, 1])
        self.backlog_s = np.ascontiguousarray(numbers[:, 2])
        self.marginal_kw = np.ascontiguousarray(numbers[:, 3])
        self.serving = np.ascontiguousarray(flags[:, 0])
        self.healthy = np.ascontiguousarray(flags[:, 1])
        self.site = np.ascontiguousarray(codes[:, 0])
        self.region = np.ascontiguousarray(codes[:, 1])
        self.gpu_kind = np.ascontiguousarray(codes[:, 2])
        serves: dict[str, list[int]] = {}
        for i, v in enumerate(views):
            for model in v.models:
                serves.setdefault(model, []).append(i)
        self.models = {}
        for model in sorted(serves):
            cols = self.models[model] = ModelColumns(
                serves=np.zeros(n, dtype=bool), learned=np.zeros(n, dtype=bool),
                rate=np.zeros(n), warm=np.zeros(n, dtype=bool),
                cold_s=np.full(n, np.nan),
            )
            cols.serves[serves[model]] = True
        for i, v in enumerate(views):
            for model, rate in v.tokens_per_s.items():
                cols_or_none = self.models.get(model)
                if cols_or_none is not None:
                    cols_or_none.learned[i] = True
                    cols_or_none.rate[i] = rate
            for model in v.warm_models:
                cols_or_none = self.models.get(model)
                if cols_or_none is not None:
                    cols_or_none.warm[i] = True
            for model, cold_s in v.cold_start_s.items():
                cols_or_none = self.models.get(model)
                if cols_or_none is not None:
                    cols_or_none.cold_s[i] = cold_s
        self._reorder = False
        self._stale.clear()
        self.site_cache = None  # site codes were reassigned

    def _write_row(self, i: int, v: NodeView) -> None:
        self.views[i] = v
        self.site[i] = self._site(v.site)
        self.region[i] = self._region(v.region)
        self.gpu_kind[i] = self._kind(v.gpu_kind)
        self.memory_mb[i] = v.memory_mb
        self.slots_free[i] = v.slots_free
        self.serving[i] = bool(v.serving)
        self.healthy[i] = bool(v.healthy)
        self.marginal_kw[i] = _marginal_kw(v)
        self.backlog_s[i] = v.backlog_s
        for model in v.models:
            if model not in self.models:
                n = len(self.views)
                self.models[model] = ModelColumns(
                    serves=np.zeros(n, dtype=bool), learned=np.zeros(n, dtype=bool),
                    rate=np.zeros(n), warm=np.zeros(n, dtype=bool),
                    cold_s=np.full(n, np.nan),
                )
        for model, cols in self.models.items():
            cols.serves[i] = model in v.models
            rate = v.tokens_per_s.get(model)
            cols.learned[i] = rate is not None
            cols.rate[i] = 0.0 if rate is None else rate
            cols.warm[i] = model in v.warm_models
            cols.cold_s[i] = v.cold_start_s.get(model, np.nan)

    def _site(self, name: str) -> int:
        code = self.site_code.get(name)
        if code is None:
            code = self.site_code[name] = len(self.site_names)
            self.site_names.append(name)
        return code

    def _region(self, name: str) -> int:
        code = self.region_code.get(name)
        if code is None:
            code = self.region_code[name] = len(self.region_code)
        return code

    def _kind(self, name: str) -> int:
        code = self.kind_code.get(name)
        if code is None:
            code = self.kind_code[name] = len(self.kind_code)
        return code


def _marginal_kw(v: NodeView) -> float:
    # The same expression as scores.marginal_energy_mwh, so the stored value is bit-identical.
    return max(v.busy_power_kw - v.idle_power_kw, 0.0)
