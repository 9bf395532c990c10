"""Replica engine: one model instance serving requests the way vLLM's V1 scheduler does.

Every iteration runs one decode token for each running sequence plus prefill chunks for
partially prefilled and newly admitted requests, within `max_num_seqs` and
`max_num_batched_tokens`. The KV cache is paged in blocks; when the decoders' next tokens need
more blocks than are free, the most recently admitted running request is preempted (recompute:
its KV is dropped and it goes back to the front of the waiting queue). New requests join only
at iteration boundaries, and no request is admitted in an iteration that preempted one.

Fast-forward: while no request joins, finishes or is preempted, a replica's iterations are all
decode-only with a fixed batch, so it advances the whole run as one SimPy event (closed-form
duration from the performance model). An arrival that could join interrupts the run; the
iteration in progress completes and the new request is scheduled at that boundary, exactly as
in per-iteration mode (`engine.fast_forward=false`).

Decoders are not visited per iteration. Their state is kept as aggregates over a global
iteration counter `g`: a decoder with KV offset o holds o + g tokens at boundary g, so
    context(g)   = s_off + n_dec g
    blocks(x)    = sum_i ceil((o_i + x) / block_size)
which `_dec_blocks` evaluates in O(block_size) from a histogram of o_i mod block_size. A heap
keyed by the iteration at which each decoder emits its last token gives the next completion.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

import simpy

from sim.kvcache import MemoryPlan
from sim.perf import DecodeRun, PerfModel

WAITING, PREFILL, DECODE, DONE = range(4)


class Request:
    """A request's live state while it is in the system (records are written on completion)."""

    __slots__ = (
        "arrival",
        "blocks",
        "cached",
        "computed",
        "finish_g",
        "first_token",
        "generated",
        "id",
        "o",
        "output",
        "preemptions",
        "prompt",
        "replica",
        "start",
        "state",
        "target",
        "ver",
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
        self.ver = 0  # invalidates stale heap entries after a preemption
        self.replica = -1
        self.cached = 0


class Replica:
    """A continuous-batching engine with a paged KV cache, run as a SimPy process (`serve`)."""

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
        on_done: Callable[[Request, float], None],
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
        self.on_done = on_done

        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}  # admission order; the last one is preempted first
        self.prefilling: list[Request] = []  # running requests still prefilling, admission order
        self._heap: list[tuple[int, int, int, Request]] = []  # (finish_g, seq, ver, request)
        self._seq = 0

        self.g = 0  # iterations completed
        self.n_dec = 0  # decoding sequences
        self.s_off = 0  # sum of o_i
        self.q_sum = 0  # sum of o_i // block_size
        self.cnt = [0] * self.bs  # histogram of o_i % block_size
        self.held_other = 0  # blocks held by prefilling requests

        self._seg_start = 0.0
        self._seg_n = 0  # iterations in the current segment
        self._run: DecodeRun | None = None
        self._chunks: list[tuple[Request, int]] = []
        self._wake: simpy.Event | None = None

        self._occ = 0.0  # occupancy of the current segment's first iteration
        self.busy_s = 0.0
        self.occ_s = 0.0  # integral of occupancy over time
        self.iterations = 0
        self.segments = 0
        self.preemptions = 0
        self.proc = env.process(self.serve())

    # ------------------------------------------------------------------ public

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def submit(self, req: Request) -> None:
        """Queue a request; wake the replica or cut its decode run so the request can join."""
        could_join = not self.waiting and len(self.running) < self.max_seqs
        self.waiting.append(req)
        if self._wake is not None:
            if not self._wake.triggered:
                self._wake.succeed()
        elif self._seg_n > 1 and could_join and self.n_dec < self.max_tokens:
            done = self._run.steps_within(self.env.now - self._seg_start)  # type: ignore[union-attr]
            if done + 1 < self._seg_n:
                self._seg_n = done + 1
                self.proc.interrupt()

    def busy_time(self, now: float) -> float:
        """Seconds spent running iterations up to `now` (counting the one in progress)."""
        return self.busy_s + (now - self._seg_start if self._seg_n else 0.0)

    def occupancy_time(self, now: float) -> float:
        """Integral of occupancy up to `now`: per iteration, the most used of batch slots
        (running / max_num_seqs), token budget and KV blocks."""
        return self.occ_s + (self._occ * (now - self._seg_start) if self._seg_n else 0.0)

    def kv_blocks_used(self) -> int:
        """Blocks allocated right now (for the iteration in progress)."""
        if not self.running:
            return self.held_other
        steps = 0
        if self._seg_n > 1:
            steps = min(self._run.steps_within(self.env.now - self._seg_start), self._seg_n - 1)  # type: ignore[union-attr]
        return self.held_other + (self._dec_blocks(self.g + steps + 1) if self.n_dec else 0)

    # ------------------------------------------------------------------ process

    def serve(self):
        env = self.env
        while True:
            if not self.running and not self.waiting:
                self._wake = env.event()
                yield self._wake
                self._wake = None
            duration = self._schedule()
            self.segments += 1
            try:
                yield env.timeout(duration)
            except simpy.Interrupt:
                # An arrival can join: finish the iteration in progress, then re-plan.
                end = self._seg_start + self._run.time(self._seg_n)  # type: ignore[union-attr]
                yield env.timeout(max(0.0, end - env.now))
            self._commit()

    # ------------------------------------------------------------------ scheduling

    def _schedule(self) -> float:
        """Form the batch for the iteration at boundary g; return the segment's duration."""
        now = self.env.now
        g = self.g
        bs = self.bs
        running = self.running
        free = self.total_blocks - self.held_other
        if self.n_dec:
            free -= self._dec_blocks(g + 1)
        preempted = False
        while free < 0:  # decoders' next tokens need blocks: preempt the newest
            free += self._preempt(next(reversed(running.values())))
            preempted = True

        budget = self.max_tokens - self.n_dec
        chunks: list[tuple[Request, int]] = []
        for req in list(self.prefilling):
            if budget <= 0:
                break
            if req.state != PREFILL:  # preempted while making room for an earlier one
                continue
            c = min(req.target - req.computed, budget)
            need = -(-(req.computed + c) // bs) - req.blocks
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

        if not preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < self.max_seqs:
                req = waiting[0]
                rem = req.target - req.computed
                if rem > budget and not self.chunked:
                    break
                c = rem if rem < budget else budget
                need = -(-(req.computed + c) // bs) - req.blocks
                if need > free:
                    break
                waiting.popleft()
                running[req.id] = req
                self.prefilling.append(req)
                req.state = PREFILL
                free -= need
                req.blocks += need
                self.held_other += need
                if req.start < 0:
                    req.start = now
                chunks.append((req, c))
                budget -= c

        if not chunks and not self.n_dec:
            raise RuntimeError(f"replica {self.index}: empty iteration at t={now}")
        self._seg_start = now
        self._chunks = chunks
        self._occ = max(
            len(running) / self.max_seqs,
            (self.max_tokens - budget) / self.max_tokens,
            (self.total_blocks - free) / self.total_blocks,
        )
        context = self.s_off + self.n_dec * g
        if chunks or not self.fast_forward or preempted:
            self._seg_n = 1
            self._run = None
            return self.perf.iteration_time(self.n_dec, context, [(c, r.computed) for r, c in chunks])

        heap = self._heap
        while heap[0][2] != heap[0][3].ver:  # drop entries of preempted decoders
            heapq.heappop(heap)
        n = min(heap[0][0] - g, self._kv_steps(g))
        self._seg_n = n
        self._run = self.perf.decode_run(self.n_dec, context, n)
        return self._run.time(n)

    def _commit(self) -> None:
        """Account the finished segment: prefill progress, first tokens, completions."""
        now = self.env.now
        n = self._seg_n
        self.busy_s += now - self._seg_start
        self.occ_s += self._occ * (now - self._seg_start)
        self.iterations += n
        self.g += n
        g = self.g
        if self._chunks:
            for req, c in self._chunks:
                req.computed += c
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
                else:
                    self._join_decode(req, g)
            self._chunks = []
        heap = self._heap
        while heap and heap[0][0] <= g:
            _, _, ver, req = heapq.heappop(heap)
            if ver == req.ver:
                self._leave_decode(req)
                self._finish(req, now)
        self._seg_n = 0
        self._run = None

    def _finish(self, req: Request, now: float) -> None:
        req.state = DONE
        del self.running[req.id]
        self.on_done(req, now)

    # ------------------------------------------------------------------ decoder aggregates

    def _join_decode(self, req: Request, g: int) -> None:
        o = req.computed - g
        req.o = o
        req.state = DECODE
        q, r = divmod(o, self.bs)
        self.q_sum += q
        self.cnt[r] += 1
        self.s_off += o
        self.n_dec += 1
        req.finish_g = g + req.output - req.generated
        self._seq += 1
        heapq.heappush(self._heap, (req.finish_g, self._seq, req.ver, req))

    def _leave_decode(self, req: Request) -> None:
        q, r = divmod(req.o, self.bs)
        self.q_sum -= q
        self.cnt[r] -= 1
        self.s_off -= req.o
        self.n_dec -= 1
        req.ver += 1

    def _dec_blocks(self, x: int) -> int:
        """Blocks the decoders hold once each has x + o_i tokens: sum ceil((o_i + x) / bs)."""
        bs = self.bs
        cycles, h = divmod(x, bs)
        n = self.n_dec
        total = self.q_sum + n * cycles + n
        if h == 0:
            total -= self.cnt[0]
        elif h >= 2:
            total += sum(self.cnt[bs + 1 - h :])
        return total

    def _kv_steps(self, g: int) -> int:
        """Decode iterations from g on whose new blocks fit (iteration g itself is known to)."""
        n = self.n_dec
        bs = self.bs
        cnt = self.cnt
        slack = self.total_blocks - self.held_other - self._dec_blocks(g + 1)
        cycles = slack // n  # each block_size iterations need exactly n new blocks
        x = g + 1 + cycles * bs
        slack -= cycles * n
        while True:
            x += 1
            slack -= cnt[(1 - x) % bs]  # decoders whose KV fills a block at boundary x - 1
            if slack < 0:
                return x - 1 - g

    def _preempt(self, req: Request) -> int:
        """Recompute-preempt a running request; return the blocks that frees for iteration g."""
        del self.running[req.id]
        if req.state == DECODE:
            freed = -(-(req.o + self.g + 1) // self.bs)
            self._leave_decode(req)
        else:
            freed = req.blocks
            self.prefilling.remove(req)
            self.held_other -= req.blocks
        req.state = WAITING
        req.blocks = 0
        req.computed = 0
        req.target = req.prompt + req.generated
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)
        return freed
