"""Prefix cache: which prompt prefixes a replica still holds in KV memory.

Traces with prefix hashes (Mooncake's `hash_ids`: one id per block of the prompt, chained so that
equal ids mean an equal prefix) let a replica skip the prefill of a prompt's leading blocks it
has already computed. Each replica keeps an LRU set of block ids bounded by its KV capacity. A
request's hit is its longest run of leading blocks present in the cache; the request then
touches (or inserts) all its blocks.

Simplifications, stated in docs/model.md: the lookup and insertion happen when a request reaches
the replica (not when its prefill completes), and cached blocks do not reduce the request's own
KV footprint; they only save prefill compute.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class PrefixCache:
    """LRU set of prefix-block ids with a capacity in blocks."""

    __slots__ = ("_lru", "capacity", "hits", "lookups")

    def __init__(self, capacity_blocks: int):
        self.capacity = max(0, int(capacity_blocks))
        self._lru: OrderedDict[int, None] = OrderedDict()
        self.hits = 0  # blocks served from the cache
        self.lookups = 0  # blocks looked up

    def peek(self, blocks: np.ndarray) -> int:
        """Leading blocks present, without touching the cache (for routing decisions)."""
        lru = self._lru
        n = 0
        for b in blocks.tolist():
            if b not in lru:
                break
            n += 1
        return n

    def use(self, blocks: np.ndarray) -> int:
        """Leading blocks present; then mark all the request's blocks most recently used."""
        lru = self._lru
        hit = 0
        leading = True
        for b in blocks.tolist():
            if b in lru:
                lru.move_to_end(b)
                if leading:
                    hit += 1
            else:
                leading = False
                lru[b] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)
        self.hits += hit
        self.lookups += len(blocks)
        return hit

    def insert(self, blocks: np.ndarray) -> None:
        """Mark blocks most recently used without looking them up: the KV a finished request
        leaves behind (its answer's full blocks), which a later request may hit."""
        lru = self._lru
        for b in blocks.tolist():
            if b in lru:
                lru.move_to_end(b)
            else:
                lru[b] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)

    def clear(self) -> None:
        """The KV cache is gone (sleep, restart)."""
        self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)
