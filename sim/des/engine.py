"""Replica engine: one model instance serving requests the way vLLM's V1 scheduler does.

Every iteration runs one decode token for each running sequence plus prefill chunks for
partially prefilled and newly admitted requests, within `max_num_seqs` and
`max_num_batched_tokens`. The KV cache is paged in blocks; when the decoders' next tokens need
more blocks than are free, the most recently admitted running request is preempted (recompute:
its KV is dropped and it goes back to the front of the waiting queue). New requests join only
at iteration boundaries (one arriving exactly at a boundary joins the iteration after the one
that starts there), and no request is admitted in an iteration that preempted one.

Fast-forward (`engine.fast_forward=true`). A replica advances in *segments*, each one SimPy
event: an optional head iteration (prefill chunks plus one decode token per running sequence)
followed by a run of decode-only iterations with a fixed batch, whose duration has a closed
form (`sim.hardware.perf`). A segment ends where the batch would change by itself: a decoder finishes,
the KV cache runs short, or a prefill stays partial. A head iteration cannot be changed once it
starts, so its outcome (first tokens, new decoders) is applied when it is planned. An arrival
that can join cuts the segment at the boundary after the iteration in progress and plans the
iteration at that boundary there and then (planned again if another request arrives before the
boundary), so joining costs one event. With `engine.fast_forward=false` every iteration is its
own event; both modes give the same per-request times (tests/test_engine.py).

Decoders are not visited per iteration: the running decode set is kept as aggregates over a
global iteration counter `g` (`sim.des.decoders.Decoders`), which give the decoders' context and
KV blocks at any boundary, the decode iterations that fit the KV cache and the next completion in
O(block_size).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import simpy

from sim.des.decoders import Decoders
from sim.des.prefix import BlockPool
from sim.hardware.kvcache import MemoryPlan
from sim.hardware.perf import DecodeRun, PerfModel

WAITING, PREFILL, DECODE, DONE = range(4)
_URGENT = simpy.events.URGENT
_NONE: list[int] = []  # shared, never appended to: a request's pooled ids until it has some
_NO_CHUNKS: list = []  # shared, never appended to: a segment's chunks or merged head when it has none


class Request:
    """A request's live state while it is in the system (records are written on completion)."""

    __slots__ = (
        "arrival",
        "blocks",
        "cached",
        "computed",
        "dec_id",
        "finish_g",
        "first_token",
        "generated",
        "hashes",
        "id",
        "o",
        "output",
        "pooled",
        "preemptions",
        "prompt",
        "reg",
        "replica",
        "seen",
        "shared",
        "start",
        "state",
        "target",
    )

    def __init__(self, rid: int, arrival: float, prompt: int, output: int):
        self.id = rid
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.generated = 0  # output tokens emitted
        self.computed = 0  # tokens whose KV is in the cache (prefill progress)
        self.target = prompt  # tokens to prefill: prompt + generated (recompute after preemption)
        self.blocks = 0  # KV blocks held while prefilling
        self.start = -1.0  # first time scheduled
        self.first_token = -1.0
        self.preemptions = 0
        self.state = WAITING
        self.o = 0  # decode: KV tokens at boundary g are o + g
        self.finish_g = 0  # decode: iteration counter value at which the last token is out
        self.dec_id = 0  # decode: its handle in the replica's decode set
        self.replica = -1
        self.cached = 0
        self.seen = arrival  # when the replica it waits at got it (async scheduling's cutoff)
        self.hashes: list[int] | None = None  # prefix-block ids of the prompt (prefix caching)
        self.pooled: list[int] = _NONE  # ids it references in the replica's prefix cache
        self.shared = 0  # KV blocks of those ids (held once, in the cache's count)
        self.reg = 0  # prompt blocks looked at for caching so far


class BoundaryTimer(simpy.Timeout):
    """A timeout processed before the other events of the same instant (SimPy's URGENT
    priority), so an arrival at exactly an iteration boundary always finds the next iteration
    already formed and joins the one after, in both engine modes."""

    def __init__(self, env: simpy.Environment, delay: float, callback: Callable[[simpy.Event], None]):
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._delay = delay
        self._ok = True
        env.schedule(self, _URGENT, delay)


class View(NamedTuple):
    """A replica's state at the current instant, independent of the engine mode."""

    g: int  # the iteration in progress
    n_dec: int  # sequences decoding
    context: int  # their KV tokens
    backlog: int  # prefill tokens waiting or in progress
    head: tuple  # a merged head's (request, chunk) while it runs


class Plan:
    """The iteration planned at a cut boundary, and the decode run it leads to (if any). (A
    class with slots rather than a NamedTuple: its fields are read on the hot path, and a slot
    reads faster than a tuple's named field.)"""

    __slots__ = ("admit", "boundary", "head", "head_occ", "merged", "run", "run_n", "run_occ", "steps")

    def __init__(
        self,
        boundary: float,
        steps: int,
        admit: list[tuple[Request, int, int]],
        head: float,
        head_occ: float,
        merged: bool,
        run: DecodeRun | None,
        run_n: int,
        run_occ: float,
    ):
        self.boundary = boundary  # time of the boundary
        self.steps = steps  # iterations of the current segment before the boundary
        self.admit = admit  # (request, prefill chunk, new blocks)
        self.head = head  # duration of the head iteration
        self.head_occ = head_occ
        self.merged = merged  # the head's outcome can be applied at once (no partial prefill, no finish)
        self.run = run  # decode run after the head
        self.run_n = run_n
        self.run_occ = run_occ


class Replica:
    """A continuous-batching engine with a paged KV cache, run on its own SimPy timers (`_next`)."""

    __slots__ = (
        "_chunks",
        "_cutoff",
        "_head",
        "_head_occ",
        "_head_reqs",
        "_occ",
        "_pending",
        "_run",
        "_seg_iters",
        "_seg_start",
        "_timer",
        "_wake",
        "async_sched",
        "bs",
        "busy_s",
        "chunked",
        "decoders",
        "env",
        "fast_forward",
        "full_prompt",
        "g",
        "hash_tokens",
        "held_other",
        "index",
        "iterations",
        "long_prefill",
        "max_seqs",
        "max_tokens",
        "occ_s",
        "on_done",
        "on_idle",
        "paused",
        "perf",
        "pool",
        "preemptions",
        "prefilling",
        "running",
        "segments",
        "stopped",
        "timers",
        "total_blocks",
        "waiting",
    )

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        perf: PerfModel,
        plan: MemoryPlan,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        chunked_prefill: bool,
        fast_forward: bool,
        async_scheduling: bool = False,
        pool: BlockPool | None = None,
        hash_tokens: int = 0,
        long_prefill_token_threshold: int = 0,
        full_prompt_admission: bool = False,
        on_done: Callable[[Request, float], None],
        on_idle: Callable[[Replica], None] | None = None,
        paused: bool = False,
    ):
        self.env = env
        self.index = index
        self.perf = perf
        self.bs = plan.block_size
        self.total_blocks = plan.kv_blocks
        self.max_seqs = max_num_seqs
        self.max_tokens = max_num_batched_tokens
        self.chunked = chunked_prefill
        self.fast_forward = fast_forward
        # async scheduling: iteration k + 1 is formed when iteration k starts, so a request seen
        # during iteration k joins iteration k + 2; `_cutoff`: only requests seen before it may
        # join at the boundary being scheduled
        self.async_sched = async_scheduling
        self._cutoff = math.inf
        # prefix caching (sim.des.prefix): cached blocks live in `pool`; `held_other` counts the KV
        # blocks beyond the decoders' own (prefilling requests' own blocks, plus cached blocks
        # in use, minus those the decoders' counts already include)
        self.pool = pool
        self.hash_tokens = hash_tokens  # prompt tokens per prefix id
        if pool is not None:
            pool.before_peek = self._evict_now
        self.long_prefill = long_prefill_token_threshold  # 0: no cap on a request's chunk
        # admit a waiting request only if its whole prompt's blocks are free (not just its first chunk's)
        self.full_prompt = full_prompt_admission
        self.on_done = on_done
        self.on_idle = on_idle  # called each time the replica runs out of work
        self.paused = paused  # provisioning, asleep or waking: requests queue, nothing runs
        self.stopped = False

        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}  # admission order; the last one is preempted first
        self.prefilling: list[Request] = []  # running requests still prefilling, admission order

        self.g = 0  # iterations completed
        self.decoders = Decoders(self.bs)  # the requests decoding, as aggregates (sim.des.decoders)
        # blocks beyond the decoders' own counts: prefilling requests' blocks, plus cached blocks in
        # use, minus those the decoders' counts include (negative when decoders share a block)
        self.held_other = 0

        # the current segment: [head iteration][decode run], starting at boundary self.g
        self._seg_start = 0.0
        self._seg_iters = 0  # iterations in the segment (0: idle)
        self._head = 0.0  # head iteration's duration (0.0: none)
        self._head_occ = 0.0
        self._head_reqs: list[tuple[Request, int]] = []  # a merged head's (request, chunk), applied ahead
        self._chunks: list[tuple[Request, int]] = []  # head chunks applied at the segment's end
        self._run: DecodeRun | None = None
        self._occ = 0.0  # occupancy during the run
        self._pending: Plan | None = None  # a cut planned at a boundary not reached yet
        self._wake: simpy.Event | None = None
        self._timer: simpy.Timeout | None = None

        self.busy_s = 0.0
        self.occ_s = 0.0  # integral of occupancy over time
        self.iterations = 0
        self.segments = 0  # segments completed (or cut)
        self.timers = 0  # SimPy events the replica scheduled (cut segments included)
        self.preemptions = 0
        BoundaryTimer(env, 0.0, lambda _e: self._next(env.now))  # starts now, before other events

    # ------------------------------------------------------------------ public

    @property
    def outstanding(self) -> int:
        """Requests waiting or running here."""
        return len(self.waiting) + len(self.running)

    def submit(self, req: Request) -> None:
        """Queue a request; wake the replica, or cut its segment if the request can join."""
        now = self.env.now
        req.seen = now
        self.waiting.append(req)
        if self._wake is not None:
            if not self._wake.triggered and not self.paused:
                self._wake.succeed()
            return
        pending = self._pending
        if pending is not None:
            if now < pending.boundary:  # the planned boundary is ahead: plan it again
                self._plan_cut(pending.steps, now)
                return
            self._materialize()
        if self._run is None:  # a single iteration: the request joins at its end
            return
        if len(self.waiting) > 1:  # the head of the queue was not admissible: FIFO
            return
        done = self._iterations_done(now) + (2 if self.async_sched else 1)
        if done < self._seg_iters:  # everyone waiting was seen by now, before that boundary's iteration formed
            self._plan_cut(done, now, cutoff=math.inf)

    def pause(self) -> None:
        """Stop taking work (only while idle): queued requests wait for `resume`."""
        assert not self.running and not self.waiting, "pause an idle replica only"
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self._wake is not None and not self._wake.triggered and (self.running or self.waiting):
            self._wake.succeed()

    def set_perf(self, perf: PerfModel) -> None:
        """Iterations that start from now on take their times from `perf` (a replica's warm-up
        begins or ends, fleet.warmup). The iteration in progress keeps its time; a fast-forwarded
        segment is cut at its end, as per-iteration mode would form the next one there."""
        self.perf = perf
        if self._wake is not None or not self._seg_iters:
            return  # idle: the next iteration is formed with it
        now = self.env.now
        pending = self._pending
        if pending is not None:
            if now < pending.boundary:  # planned with the old times: the boundary below decides afresh
                self._pending = None
            else:
                self._materialize()
        if self._run is None:  # a single iteration: the next is formed at its end
            return
        done = self._iterations_done(now) + 1
        if done < self._seg_iters:
            self._seg_iters = done
            self._retarget(self._boundary(done), now)

    def evacuate(self) -> list[Request]:
        """Stop for good (the GPU is taken away) and hand back every request, in arrival order,
        reset to recompute from the tokens it had produced by now."""
        now = self.env.now
        if self._pending is not None:
            if now >= self._pending.boundary:
                self._materialize()
            else:
                self._pending = None  # its admissions never happened
        done = min(self._iterations_done(now), self._seg_iters) if self._seg_iters else 0
        g_now = self.g + done
        out = list(self.waiting)
        for req in out:  # a prefix-cache hit belonged to this replica's cache: look up again
            req.computed = 0
            req.target = req.prompt + req.generated
            req.pooled, req.shared, req.reg = [], 0, 0
        for req in self.running.values():
            if req.state == DECODE:
                req.generated = req.output - (req.finish_g - g_now)
            if req.generated == 0 or req.first_token > now:  # a head applied ahead, not finished
                req.first_token = -1.0
            req.state = WAITING
            req.computed = 0
            req.blocks = 0
            req.target = req.prompt + req.generated
            req.pooled, req.shared, req.reg = [], 0, 0
            req.preemptions += 1  # its work so far is recomputed elsewhere
            out.append(req)
        callbacks = self._timer.callbacks if self._timer is not None else None
        if callbacks and self._at_boundary in callbacks:  # (None once the timer has fired)
            callbacks.remove(self._at_boundary)
        if self._seg_iters:  # the partial segment's time and iterations
            self.busy_s += now - self._seg_start
            self.occ_s += self._occupied(now - self._seg_start)
            self.iterations += done
        self.waiting.clear()
        self.running.clear()
        self.prefilling.clear()
        self.decoders.clear()
        self.held_other = 0
        if self.pool is not None:
            self.pool.live.clear()
            self.pool.clear()
        self._seg_iters = 0
        self._run = None
        self._head_reqs = _NO_CHUNKS
        self.stopped = True
        return sorted(out, key=lambda r: r.id)

    def view(self) -> View:
        """The replica as it stands now, the same in both engine modes: the iteration in
        progress, the decoding sequences, their context, and the prefill still to do. (A
        fast-forwarded run advances its counter only at its end, and a merged head is applied
        ahead of time; the view undoes both.)"""
        now = self.env.now
        self.sync()
        done = min(self._iterations_done(now), self._seg_iters) if self._seg_iters else 0
        g = self.g + done
        n = self.decoders.n
        context = self.decoders.context(g)
        backlog = sum(r.target - r.computed for r in self.waiting) + sum(r.target - r.computed for r in self.prefilling)
        head = ()
        if self._head_reqs and done == 0:  # a merged head still running: its requests prefill
            head = tuple(self._head_reqs)
            for req, c in head:
                n -= 1
                context -= req.o + g
                backlog += c
        return View(g, n, context, backlog, head)

    def seat_wait(self, k: int, view: View) -> float:
        """Rough time until k batch slots have freed: iterations to the k-th next finish x a
        decode step (for routing estimates, not for scheduling)."""
        skip = {id(r) for r, _ in view.head}
        finishes = sorted(f for f, r in self.decoders.members() if id(r) not in skip)
        if not finishes or not view.n_dec:
            return 0.0
        kth = finishes[min(k, len(finishes)) - 1]
        step = self.perf.iteration_time(view.n_dec, view.context, [])
        return max(kth - view.g, 1) * step

    def sync(self) -> None:
        """Bring the state up to env.now (a planned cut whose boundary has passed)."""
        if self._pending is not None and self.env.now >= self._pending.boundary:
            self._materialize()

    def busy_time(self, now: float) -> float:
        """Seconds spent running iterations up to `now` (counting the one in progress)."""
        return self.busy_s + (now - self._seg_start if self._seg_iters else 0.0)

    def occupancy_time(self, now: float) -> float:
        """Integral of occupancy up to `now`: per iteration, the most used of batch slots
        (running / max_num_seqs), token budget and KV blocks."""
        return self.occ_s + (self._occupied(now - self._seg_start) if self._seg_iters else 0.0)

    def kv_blocks_used(self) -> int:
        """Blocks allocated right now (for the iteration in progress)."""
        if not self.running:
            return self.held_other
        x = self.g + 1
        if self._seg_iters:
            x += min(self._iterations_done(self.env.now), self._seg_iters - 1)
        decoders = self.decoders
        return self.held_other + (decoders.blocks_after(x) if decoders.n else 0)

    # ------------------------------------------------------------------ timers

    def _next(self, now: float) -> None:
        """What the replica does next: wait to be woken when it has nothing to run (or is
        paused), else form the next iteration and set a timer for its end. The replica runs on
        its own timers and wake events, each with one callback of its own (no SimPy process)."""
        if self.paused or (not self.running and not self.waiting):
            if self.on_idle is not None and not self.paused and not self.running and not self.waiting:
                self.on_idle(self)
            if self.stopped:
                return
            self._wake = self.env.event()
            self._wake.callbacks.append(self._woken)
            return
        cutoff = self._cutoff
        duration = self._schedule(now)
        waiting = self.waiting
        if waiting and waiting[0].seen >= cutoff and self._run is not None and self._seg_iters > 1:
            end = self._plan_cut(1)  # seen during the last iteration: joins next (the timer is set below)
            if end is not None:
                duration = end - now
        self._set_timer(duration)

    def _woken(self, _event: simpy.Event) -> None:
        self._wake = None
        self._cutoff = math.inf  # nothing was in flight: whoever waits is seen
        self._next(self.env.now)

    def _set_timer(self, duration: float) -> None:
        self._timer = BoundaryTimer(self.env, duration, self._at_boundary)
        self.timers += 1

    def _at_boundary(self, _event: simpy.Event) -> None:
        """The timer of the current segment's end (or of a planned cut) has fired."""
        if self._pending is not None:
            self._materialize()
        now = self.env.now  # (a property: read once)
        self._advance(now)
        self._next(now)

    # ------------------------------------------------------------------ segments

    def _boundary(self, k: int) -> float:
        """Time of the boundary after k iterations of the current segment."""
        if self._head:
            if k == 0:
                return self._seg_start
            return self._seg_start + self._head + (self._run.time(k - 1) if k > 1 else 0.0)  # type: ignore[union-attr]
        return self._seg_start + self._run.time(k)  # type: ignore[union-attr]

    def _iterations_done(self, now: float) -> int:
        elapsed = now - self._seg_start
        if self._head:
            if elapsed < self._head or self._run is None:
                return 0
            return 1 + self._run.steps_within(elapsed - self._head)
        return self._run.steps_within(elapsed) if self._run is not None else 0

    def _occupied(self, elapsed: float) -> float:
        head = self._head
        if head:
            if elapsed <= head:
                return self._head_occ * elapsed
            return self._head_occ * head + self._occ * (elapsed - head)
        return self._occ * elapsed

    def _set_segment(
        self, start: float, head: float, head_occ: float, chunks, run, run_n: int, occ: float, merged=_NO_CHUNKS
    ):
        self._head_reqs = merged  # (a list of the caller's own, not kept by it)
        self._seg_start = start
        self._head = head
        self._head_occ = head_occ
        self._chunks = chunks
        self._run = run if run_n else None
        self._seg_iters = (1 if head else 0) + run_n
        self._occ = occ

    def _schedule(self, now: float) -> float:
        """Form the batch at boundary g (the clock's `now`) and plan the segment; return its duration."""
        g = self.g
        bs = self.bs
        running = self.running
        decoders = self.decoders
        free = self.total_blocks - self.held_other
        if decoders.n:
            free -= decoders.blocks_after(g + 1)
        preempted = False
        while free < 0:  # decoders' next tokens need blocks: preempt the newest
            free += self._preempt(next(reversed(running.values())))
            preempted = True

        budget = self.max_tokens - decoders.n
        chunks: list[tuple[Request, int]] = []
        reload = 0.0  # seconds copying prefix blocks back from the host tier before this iteration
        for req in list(self.prefilling) if self.prefilling else ():
            if budget <= 0:
                break
            if req.state != PREFILL:  # preempted while making room for an earlier one
                continue
            c = min(req.target - req.computed, budget)
            if 0 < self.long_prefill < c:
                c = self.long_prefill
            need = -(-(req.computed + c) // bs) - req.blocks - req.shared
            while need > free and req.state == PREFILL:
                free += self._preempt(next(reversed(running.values())))
                preempted = True
            if req.state != PREFILL:
                continue
            free -= need
            req.blocks += need
            self.held_other += need
            chunks.append((req, c))
            budget -= c

        if not preempted and self.waiting:  # vLLM admits nobody in a step that preempted
            cutoff = self._cutoff
            if not chunks and not decoders.n:  # nothing else would run: the scheduler sees them now
                cutoff = math.inf
            if self.pool is not None:
                free, budget, reload = self._admit_cached(free, budget, cutoff, chunks, now)
            else:
                for req, c, need in self._plan_admission(free, budget, cutoff):
                    self.waiting.popleft()
                    self._admit(req, need, now)
                    chunks.append((req, c))
                    free -= need
                    budget -= c

        if self.pool is not None:  # this iteration's new blocks evict cached ones
            self.pool.evict_to(free)
        if not chunks and not decoders.n:
            raise RuntimeError(f"replica {self.index}: empty iteration at t={now}")
        occ = self._occupancy(len(running), budget, free)
        n_dec = decoders.n
        context = decoders.s_off + n_dec * g  # (decoders.context(g), without a call on the hot path)
        if not chunks and self.fast_forward and not preempted:  # a pure decode run
            n = decoders.fit(g, free, decoders.next_finish() - g)  # (free: the blocks to spare at g + 1)
            run = self.perf.decode_run(n_dec, context, n)
            self._set_segment(now, 0.0, 0.0, _NO_CHUNKS, run, n, occ)
            return run.time(n)
        head = self.perf.iteration_time(decoders.n, context, [(c, r.computed) for r, c in chunks])
        if reload:
            head += reload
        if self.fast_forward and not preempted and self._mergeable(chunks):
            self._apply_head(chunks, now + head, g + 1)
            slack = self.total_blocks - self.held_other - decoders.blocks_after(g + 2)
            n = decoders.fit(g + 1, slack, decoders.next_finish() - (g + 1))
            n_dec = decoders.n
            run = self.perf.decode_run(n_dec, decoders.s_off + n_dec * (g + 1), n) if n else None
            run_occ = self._occupancy(len(running), self.max_tokens - n_dec, slack)
            self._set_segment(now, head, occ, _NO_CHUNKS, run, n, run_occ, merged=chunks)
            return head + (run.time(n) if run is not None else 0.0)
        self._set_segment(now, head, occ, chunks, None, 0, 0.0)
        return head

    def _mergeable(self, chunks) -> bool:
        """The head's outcome is final: every prefill completes, nobody finishes at its end,
        and nobody waits (a freed token budget could admit them at the next boundary)."""
        if self.waiting:
            return False
        for req, c in chunks:
            if req.computed + c != req.target or req.generated + 1 >= req.output:
                return False
        return len(chunks) == len(self.prefilling)

    def _apply_head(self, chunks, end: float, g_next: int) -> None:
        """Apply a head iteration's outcome: prefills complete, first tokens at `end`."""
        decoders = self.decoders
        for req, c in chunks:
            req.computed += c
            if self.pool is not None:
                self._register(req, end)
            self.held_other -= req.blocks
            req.blocks = 0
            if req.generated == 0:
                req.first_token = end
            req.generated += 1
            # it decodes (inline, as in _advance: once per request, so no call layer)
            req.o = req.computed - g_next
            req.state = DECODE
            self.held_other -= req.shared  # now inside the decoder's own count
            req.finish_g = g_next + req.output - req.generated
            req.dec_id = decoders.join(req.o, req.finish_g, req)
        self.prefilling.clear()

    def _plan_admission(self, free: int, budget: int, cutoff: float) -> list[tuple[Request, int, int]]:
        """Waiting requests (FIFO) admissible now, of those seen before `cutoff`: (request,
        prefill chunk, new blocks)."""
        plan = []
        seats = self.max_seqs - len(self.running)
        bs = self.bs
        for req in self.waiting:
            if budget <= 0 or seats <= 0 or req.seen >= cutoff:
                break
            rem = req.target - req.computed
            if 0 < self.long_prefill < rem:
                rem = self.long_prefill
            if rem > budget and not self.chunked:
                break
            c = rem if rem < budget else budget
            need = -(-(req.computed + c) // bs) - req.blocks
            if need > free or (self.full_prompt and -(-req.target // bs) - req.blocks > free):
                break
            plan.append((req, c, need))
            free -= need
            budget -= c
            seats -= 1
        return plan

    def _admit(self, req: Request, need: int, now: float) -> None:
        self.running[req.id] = req
        self.prefilling.append(req)
        req.state = PREFILL
        req.blocks += need
        self.held_other += need
        if req.start < 0.0:
            req.start = now

    # ------------------------------------------------------------------ prefix cache

    def _admit_cached(self, free: int, budget: int, cutoff: float, chunks: list, now: float) -> tuple[int, int, float]:
        """Admit waiting requests (FIFO) at this boundary, each looking its prompt up in the
        prefix cache as it is scheduled; cached blocks that memory now needs are evicted first.
        Return the free blocks, the token budget left and the seconds reloading host-tier blocks."""
        pool = self.pool
        assert pool is not None
        bs, bt, k = self.bs, self.hash_tokens, pool.k
        seats = self.max_seqs - len(self.running)
        taken: set[int] = set()
        reload = 0.0
        pool.evict_to(free)
        while self.waiting and budget > 0 and seats > 0:
            req = self.waiting[0]
            if req.seen >= cutoff:
                break
            hit = revived = reloaded = 0
            if req.computed == 0 and req.hashes is not None:
                # whole prompt blocks only, and never the last token of a prompt (its logits)
                cap = min(len(req.hashes), min(req.target - 1, req.prompt) // bt)
                hit, revived, reloaded = pool.lookup(req.hashes, cap, taken)
            cached = hit * bt if req.computed == 0 else req.computed
            rem = req.target - cached
            if 0 < self.long_prefill < rem:
                rem = self.long_prefill
            if rem > budget and not self.chunked:
                break
            c = rem if rem < budget else budget
            shared = hit * k
            own = -(-(cached + c) // bs) - shared - req.blocks
            need = own + revived * k
            if need > free or (self.full_prompt and -(-req.target // bs) - shared - req.blocks + revived * k > free):
                break
            self.waiting.popleft()
            if req.hashes is not None and req.computed == 0:
                pool.lookups += len(req.hashes)
            if hit:
                ids = req.hashes[:hit]  # type: ignore[index]
                pool.acquire(ids)
                taken.update(ids)
                pool.hits += hit
                req.pooled = list(ids)
                req.shared = shared
                req.reg = hit
                req.computed = cached
                if req.start < 0:
                    req.cached = cached
                self.held_other += revived * k
                if reloaded:
                    pool.reloads += reloaded
                    reload += reloaded * pool.reload_s
            self._admit(req, own, now)
            chunks.append((req, c))
            free -= need
            budget -= c
            seats -= 1
            pool.evict_to(free)
        return free, budget, reload

    def _register(self, req: Request, now: float) -> None:
        """Cache the prompt blocks the request has computed so far (its own KV becomes shared)."""
        ids = req.hashes
        if ids is None:
            return
        full = min(len(ids), min(req.computed, req.prompt) // self.hash_tokens)  # whole prompt blocks
        if full <= req.reg:
            return
        pool = self.pool
        new = [h for h in ids[req.reg : full] if pool.register(h, now)]  # type: ignore[union-attr]
        if new:
            req.pooled = req.pooled + new
        req.reg = full
        shared = len(req.pooled) * pool.k  # type: ignore[union-attr]
        req.blocks -= shared - req.shared
        req.shared = shared

    def _release(self, req: Request) -> int:
        """The request stops using its cached blocks; return the KV blocks that frees."""
        freed = self.pool.release(req.pooled) * self.pool.k  # type: ignore[union-attr]
        self.held_other -= freed
        req.pooled, req.shared, req.reg = [], 0, 0
        return freed

    def _evict_now(self) -> float:
        """Apply the evictions due by now (decoders grew into the memory of free cached blocks);
        return the time."""
        self.sync()
        self.pool.evict_to(self.total_blocks - self.kv_blocks_used())  # type: ignore[union-attr]
        return self.env.now

    def _occupancy(self, seats: int, budget: int, free: int) -> float:
        return max(
            seats / self.max_seqs,
            (self.max_tokens - budget) / self.max_tokens,
            (self.total_blocks - free) / self.total_blocks,
        )

    # ------------------------------------------------------------------ cutting a segment

    def _plan_cut(self, steps: int, now: float | None = None, cutoff: float | None = None) -> float | None:
        """Requests can join at the boundary after `steps` iterations of the current segment:
        end the segment there and plan the iteration (and the decode run after it) that starts
        at that boundary; with the clock's `now`, move the replica's timer to the new end.
        Decoders finish and the KV cache runs short only at the segment's own end, beyond the
        cut, so the plan depends on nothing but the waiting queue."""
        if self.pool is not None:  # hits are found at the boundary: end the segment there
            if steps >= self._seg_iters or len(self.running) >= self.max_seqs:
                return None
            self._seg_iters = steps
            end = self._boundary(steps)
            if now is not None:
                self._retarget(end, now)
            return end
        g = self.g + steps
        decoders = self.decoders
        n = decoders.n
        free = self.total_blocks - self.held_other - decoders.blocks_after(g + 1)
        budget = self.max_tokens - n
        if cutoff is None:
            cutoff = self._boundary(steps - 1) if self.async_sched else math.inf
        admit = self._plan_admission(free, budget, cutoff)
        pending = self._pending
        if not admit:
            return None  # nobody can join
        # Nobody more joins than planned: the plan stands, unless it was merged with the run
        # after it and someone is now left waiting (the budget the head's prefills free at its
        # end may admit them at the next boundary).
        if (
            pending is not None
            and len(admit) == len(pending.admit)
            and (not pending.merged or len(admit) == len(self.waiting))
        ):
            return None
        chunks = []
        complete = True  # every prefill completes and nobody finishes at the head's end
        for r, c, need in admit:  # (one pass, no comprehension: the hot path)
            chunks.append((c, r.computed))
            budget -= c
            free -= need
            if r.computed + c != r.target or r.generated + 1 >= r.output:
                complete = False
        head = self.perf.iteration_time(n, decoders.s_off + n * g, chunks)
        seats = len(self.running) + len(admit)
        head_occ = self._occupancy(seats, budget, free)
        merged = complete and len(admit) == len(self.waiting)
        run, run_n, run_occ = None, 0, 0.0
        if merged:  # the decode set once the admitted requests decode from boundary g + 1
            fin = decoders.next_finish()
            offsets = []
            for r, _, _ in admit:
                offsets.append(r.target - (g + 1))
                f = g + r.output - r.generated
                if f < fin:
                    fin = f
            after = decoders.plus(offsets)
            slack = self.total_blocks - self.held_other - after.blocks_after(g + 2)
            run_n = after.fit(g + 1, slack, fin - (g + 1))
            if run_n:
                run = self.perf.decode_run(after.n, after.s_off + after.n * (g + 1), run_n)
                run_occ = self._occupancy(seats, self.max_tokens - after.n, slack)
        boundary = self._boundary(steps)
        self._pending = Plan(boundary, steps, admit, head, head_occ, merged, run, run_n, run_occ)
        end = boundary + head + (run.time(run_n) if run is not None else 0.0)
        if now is not None:
            self._retarget(end, now)
        return end

    def _retarget(self, end: float, now: float) -> None:
        """Move the replica's next boundary to `end`: the current timer loses its callback (its
        only one: it still fires, doing nothing) and a new one is set."""
        self._timer.callbacks.clear()  # type: ignore[union-attr]
        self._set_timer(max(0.0, end - now))

    def _materialize(self) -> None:
        """The planned boundary has passed: finish the cut segment there, admit the planned
        requests and make the planned iteration (and run) the current segment."""
        p: Plan = self._pending  # type: ignore[assignment]
        self._pending = None
        # the cut segment ends before any decoder finishes: only the iteration count moves
        elapsed = p.boundary - self._seg_start
        self.busy_s += elapsed
        self.occ_s += self._occupied(elapsed)
        self.iterations += p.steps
        self.segments += 1
        self.g += p.steps
        chunks = []
        for req, c, need in p.admit:
            self.waiting.popleft()  # the planned requests are the head of the queue, in order
            self._admit(req, need, p.boundary)
            chunks.append((req, c))
        if p.merged:
            self._apply_head(chunks, p.boundary + p.head, self.g + 1)
            self._set_segment(p.boundary, p.head, p.head_occ, _NO_CHUNKS, p.run, p.run_n, p.run_occ, merged=chunks)
        else:
            self._set_segment(p.boundary, p.head, p.head_occ, chunks, None, 0, 0.0)

    # ------------------------------------------------------------------ accounting

    def _advance(self, now: float) -> None:
        """Account the segment ending at `now`: iterations, prefill progress, completions."""
        n = self._seg_iters
        elapsed = now - self._seg_start
        self.busy_s += elapsed
        self.occ_s += self._occupied(elapsed)
        self.iterations += n
        self.segments += 1
        self.g += n
        g = self.g
        if self.pool is not None:  # the last iteration's blocks evicted cached ones (before any release)
            decoders = self.decoders
            used = self.held_other + (decoders.blocks_after(g) if decoders.n else 0)
            self.pool.evict_to(self.total_blocks - used)
        if self._chunks:
            for req, c in self._chunks:
                req.computed += c
                if self.pool is not None:
                    self._register(req, now)
                if req.computed < req.target:
                    continue
                self.prefilling.remove(req)
                self.held_other -= req.blocks
                req.blocks = 0
                if req.generated == 0:
                    req.first_token = now
                req.generated += 1
                if req.generated == req.output:
                    self._finish(req, now)
                else:  # it decodes (as in _apply_head)
                    req.o = req.computed - g
                    req.state = DECODE
                    self.held_other -= req.shared
                    req.finish_g = g + req.output - req.generated
                    req.dec_id = self.decoders.join(req.o, req.finish_g, req)
            self._chunks = _NO_CHUNKS
        decoders = self.decoders
        while decoders.first_due <= g:  # one at a time: a completion's callbacks may look at the replica
            req = decoders.pop_due(g)
            if req is None:  # (only members that had left were due)
                break
            self.held_other += req.shared
            self._finish(req, now)
        if self.async_sched and self.waiting:  # the next batch was formed when the last iteration started
            self._cutoff = self._boundary(n - 1)  # (read only while someone waits; after completions' callbacks)
        self._seg_iters = 0
        self._head = 0.0
        self._run = None
        self._head_reqs = _NO_CHUNKS

    def _finish(self, req: Request, now: float) -> None:
        req.state = DONE
        del self.running[req.id]
        self.on_done(req, now)  # (may cache the answer's blocks: freed before the prompt's, as vLLM frees tail first)
        if req.pooled:
            self._release(req)

    # ------------------------------------------------------------------ decoder aggregates

    def _preempt(self, req: Request) -> int:
        """Recompute-preempt a running request; return the blocks that frees for iteration g."""
        del self.running[req.id]
        if req.state == DECODE:
            req.generated = req.output - (req.finish_g - self.g)  # tokens out by boundary g
            freed = -(-(req.o + self.g + 1) // self.bs) - req.shared
            self.held_other += req.shared
            self.decoders.leave(req.o, req.dec_id)
        else:
            freed = req.blocks
            self.prefilling.remove(req)
            self.held_other -= req.blocks
        if req.pooled:
            freed += self._release(req)
        req.state = WAITING
        req.blocks = 0
        req.computed = 0
        req.target = req.prompt + req.generated
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)
        return freed
