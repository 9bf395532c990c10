"""Prefix cache as vLLM V1 keeps it: a replica's KV blocks, some shared and some merely cached.

Workloads with prefix hashes (Mooncake's `hash_ids`, the shared-prefix generator's block ids:
one id per `block_tokens` of the prompt, chained so that equal ids mean an equal prefix) let a
replica reuse the KV of leading prompt blocks it has already computed. The rules follow vLLM
V1's KV-cache manager and block pool (vllm/v1/core/kv_cache_manager.py, block_pool.py,
v0.15.1):

- a request's hits are looked up when it is scheduled (not when it arrives): the leading blocks
  whose ids are cached, at most the prompt's length minus one token (the last token is always
  computed, for its logits);
- a cached block referenced by running requests is held once in KV memory however many share
  it (reference counts);
- a block is cached once its prompt tokens are computed; when its last user finishes or is
  preempted it stays cached but free, and free cached blocks are evicted least recently freed
  first when their memory is needed (a request's blocks are freed tail first, so its tail is
  evicted before its head);
- a preempted request looks its prompt up again when it is rescheduled, so the blocks it had
  computed are reused unless they were evicted meanwhile.

`BlockPool` holds the ids; the replica (`sim.des.engine`) keeps the memory accounting.

A host tier (`engine.kv_offload.cpu_gib` > 0) keeps the blocks evicted from the GPU in host
memory, least recently evicted dropped first when it is full; a lookup that reaches them counts
them as hits to reload (the replica charges bytes / PCIe bandwidth to the admitting iteration)
instead of prefill to recompute.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class BlockPool:
    """Cached prefix blocks of one replica: `live` (id -> references by running requests) and
    `free` (cached, unreferenced, least recently freed first). Each id stands for `k` KV blocks
    of the engine (k = block_tokens / engine block size)."""

    __slots__ = (
        "_born",
        "before_peek",
        "free",
        "hits",
        "host",
        "host_cap",
        "k",
        "live",
        "lookups",
        "reload_s",
        "reloads",
    )

    def __init__(self, k: int, host_ids: int = 0, reload_s: float = 0.0):
        self.k = k
        self.host_cap = host_ids  # ids the host tier holds (0: no host tier)
        self.host: OrderedDict[int, None] = OrderedDict()  # evicted to host memory, least recently first
        self.reload_s = reload_s  # seconds to copy one id's KV blocks from the host to each GPU
        self.reloads = 0  # ids reloaded from the host
        self.live: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict()
        self._born: dict[int, float] = {}  # when a live id was cached (a merged head caches ahead)
        # the replica's: apply the evictions due by now and return the time (a merged head's
        # blocks are cached ahead of its end, and must not be seen before it)
        self.before_peek: Callable[[], float] | None = None
        self.hits = 0  # blocks served from the cache
        self.lookups = 0  # blocks looked up

    def live_blocks(self) -> int:
        return len(self.live) * self.k

    def peek(self, ids: np.ndarray) -> int:
        """Leading ids cached now, without taking them (for routing decisions)."""
        now = self.before_peek() if self.before_peek is not None else float("inf")
        live, free, born = self.live, self.free, self._born
        n = 0
        for h in ids.tolist():
            if h in free or (h in live and born.get(h, 0.0) <= now):
                n += 1
            else:
                break
        return n

    def lookup(self, ids: list[int], cap: int, taken: set[int]) -> tuple[int, int, int]:
        """(hits, revived, reloaded): leading ids cached (at most `cap`), how many of them need
        GPU memory again (free cached blocks a hit takes back into use, and host-tier blocks),
        and how many of those come from the host (`taken`: ids taken by requests admitted
        before this one in the same step, live for this one)."""
        live, free, host = self.live, self.free, self.host
        hit = revived = reloaded = 0
        for h in ids[:cap]:
            if h in live or h in taken:
                hit += 1
            elif h in free:
                hit += 1
                revived += 1
            elif h in host:
                hit += 1
                revived += 1
                reloaded += 1
            else:
                break
        return hit, revived, reloaded

    def acquire(self, ids: list[int]) -> None:
        """Running requests reference these cached ids."""
        live, free = self.live, self.free
        for h in ids:
            if h in live:
                live[h] += 1
            else:
                if h in free:
                    del free[h]
                else:  # reloaded from the host tier
                    del self.host[h]
                live[h] = 1

    def register(self, h: int, now: float) -> bool:
        """Cache a block a request has just computed; False when the id is already cached (a
        request that computed the same prefix in the same step keeps its own copy)."""
        if h in self.live or h in self.free:
            return False
        self.live[h] = 1
        self._born[h] = now
        return True

    def release(self, ids: list[int]) -> int:
        """A request stops referencing its ids (tail first); return how many became free."""
        live, free = self.live, self.free
        freed = 0
        for h in reversed(ids):
            refs = live[h] - 1
            if refs:
                live[h] = refs
            else:
                del live[h]
                self._born.pop(h, None)
                free[h] = None
                freed += 1
        return freed

    def insert(self, ids: np.ndarray) -> None:
        """Cache blocks a finishing request computed but never looked up (a conversation's answer,
        which its next turn's prompt repeats), free and tail first, like its other blocks."""
        live, free = self.live, self.free
        for h in reversed(ids.tolist()):
            if h not in live and h not in free:
                free[h] = None

    def evict_to(self, free_blocks: int) -> None:
        """Evict the least recently freed cached blocks until they fit in `free_blocks`."""
        free, k = self.free, self.k
        while free and len(free) * k > free_blocks:
            h, _ = free.popitem(last=False)
            self._born.pop(h, None)
            if self.host_cap:
                self._offload(h)

    def _offload(self, h: int) -> None:
        """An evicted id moves to the host tier, whose least recently evicted id is dropped when full."""
        host = self.host
        host[h] = None
        host.move_to_end(h)
        if len(host) > self.host_cap:
            host.popitem(last=False)

    def clear(self) -> None:
        """The KV cache is gone (sleep, restart); only an idle replica is cleared."""
        self.free.clear()
        self.host.clear()
        self._born = {h: t for h, t in self._born.items() if h in self.live}

    def __len__(self) -> int:
        return len(self.live) + len(self.free)
