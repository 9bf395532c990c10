"""Closed-loop users: N users, each sending a request, waiting for its answer, thinking, and
sending the next (`workload=closed`), the load of most published benchmarks and of every agent.

Arrival times depend on when answers come back, so this workload cannot be built before the
simulation: the fleet asks it for a user's next request when that user's previous one has ended
(served by a replica, served by the API, or rejected) and dispatches it after the think time.
What each request is made of is drawn ahead, in the order requests are sent: the k-th request
sent takes the k-th draw of every stream (`stream(seed, name)`), so a seed fixes the lengths the
run uses in that order, and the run's events fix which user sends them.

Sessions. A user's session has `turns` turns (a length model, drawn when the session starts).
Its first prompt comes from `prompt_tokens`; turn i+1's prompt is turn i's prompt, the answer the
user got and `turn_tokens` new tokens, so a conversation is a growing shared prefix. With prefix
caching, each session's token stream is cut into blocks of `block_tokens` (the engine's block
size) with ids of their own; a prompt carries the ids of its full blocks, and a replica that
finishes a turn also holds the blocks of the answer (prompt + output - 1 tokens of KV), as vLLM
caches every full block it computed. A rejected turn ends its session: the user thinks, then
starts a new one. After a session's last turn the user starts a new session with fresh ids.

Plain Python and NumPy; the SimPy side is in `sim.des.fleet`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.config.errors import ConfigError
from sim.config.schema import LengthConfig, LimitsConfig, WorkloadConfig, multi_turn, validate_workload
from sim.workload.build import Workload, stream
from sim.workload.lengths import sample_lengths, sample_pairs

FIRST_DRAW = 4096  # requests drawn for at first; each later batch doubles that, up to
MOST_DRAWN = 1 << 16  # requests drawn for at once (the schedule depends on nothing else)


class _Draws:
    """What the k-th request sent is made of (think time after it, prompt and output tokens,
    turns of a session it starts, tokens it adds to a session it continues), drawn in batches
    from one stream per quantity. Batch sizes depend on nothing but k, so neither do the values."""

    __slots__ = ("_columns", "_draw", "_size", "_start")

    def __init__(self, draw: Callable[[int], tuple[np.ndarray, ...]], first: int):
        self._draw = draw
        self._size = first
        self._columns = [v.tolist() for v in draw(first)]
        self._start = 0  # index of the batch's first request

    def get(self, k: int) -> tuple:
        while k >= self._start + self._size:
            self._start += self._size
            self._size = min(2 * self._size, MOST_DRAWN)
            self._columns = [v.tolist() for v in self._draw(self._size)]
        j = k - self._start
        return tuple(c[j] for c in self._columns)


def _think(wc: WorkloadConfig, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    mean, dist = wc.think_time_s, wc.think_dist
    if mean == 0 or dist == "fixed":
        return lambda n: np.full(n, float(mean))
    if dist == "exponential":
        return lambda n: rng.exponential(mean, n)
    sigma = math.sqrt(math.log1p(wc.think_cv**2))  # lognormal with this mean and CV
    mu = math.log(mean) - sigma * sigma / 2
    return lambda n: rng.lognormal(mu, sigma, n)


def _scaled(x: np.ndarray, scale: float) -> np.ndarray:
    return np.maximum(1, np.rint(x * scale)).astype(np.int64) if scale != 1.0 else x


def _draws(wc: WorkloadConfig, seed: int, multi: bool) -> Callable[[int], tuple[np.ndarray, ...]]:
    """n requests' (think, prompt, output, turns, turn tokens), each from its own stream."""
    name = wc.name
    think = _think(wc, stream(seed, f"{name}/think"))
    pairs = bool(wc.pairs.path or wc.pairs.values)
    rngs = {q: stream(seed, f"{name}/{q}") for q in ("pairs", "prompt_tokens", "output_tokens", "turns", "turn_tokens")}

    def draw(n: int) -> tuple[np.ndarray, ...]:
        if pairs:
            prompt, output = sample_pairs(wc.pairs, n, rngs["pairs"], "workload.pairs")
        else:
            prompt = sample_lengths(wc.prompt_tokens, n, rngs["prompt_tokens"], "workload.prompt_tokens")
            output = sample_lengths(wc.output_tokens, n, rngs["output_tokens"], "workload.output_tokens")
        if multi:
            turns = sample_lengths(wc.turns, n, rngs["turns"], "workload.turns")
            extra = sample_lengths(wc.turn_tokens, n, rngs["turn_tokens"], "workload.turn_tokens")
        else:
            turns = extra = np.ones(n, np.int64)
        ps, os_ = wc.prompt_scale, wc.output_scale
        return think(n), _scaled(prompt, ps), _scaled(output, os_), turns, _scaled(extra, ps)

    return draw


@dataclass
class _User:
    """Where one user stands: its session and the turn it last sent."""

    session: int = -1
    turn: int = 0
    turns: int = 0
    prompt: int = 0  # the last request's prompt ...
    answer: int | None = None  # ... and the output tokens it got (None: rejected)
    think: float = 0.0  # the pause after the last request's answer
    stream: np.ndarray | None = None  # the session's block ids so far


class Conversations:
    """What users who send as the fleet answers have sent, in sending (= arrival) order, and the
    prefix-block ids of their sessions: the part of the fleet's interface that generated users
    (`ClosedLoop`) and sessions replayed from a trace (`sim.workload.sessions.SessionReplay`)
    share. A subclass decides what each user sends (`starts`, `send`, `answered`).

    `block_tokens` > 0 gives every prompt its prefix-block ids (for prefix caching: pass the
    engine's block size)."""

    def __init__(self, name: str, users: int, end: float, block_tokens: int):
        self.name = name
        self.users = users
        self.end = end  # no request is sent at or after this time
        self.block_tokens = block_tokens
        self._state = [_User() for _ in range(users)]
        self._next_block = 0
        self.sessions = 0
        self.capped = False  # users stopped because a request count was reached
        # what was sent, in sending (= arrival) order, in compact columns
        self.arrival = array("d")
        self.prompt = array("q")
        self.output = array("q")
        self.user = array("q")
        self.session = array("q")
        self.turn = array("q")
        self.blocks_of: list[np.ndarray] = []

    @property
    def sent(self) -> int:
        return len(self.arrival)

    def _record(self, u: int, st: _User, now: float, prompt: int, output: int) -> None:
        """Note the request user u sends now, with its prefix-block ids."""
        self.arrival.append(now)
        self.prompt.append(prompt)
        self.output.append(output)
        self.user.append(u)
        self.session.append(st.session)
        self.turn.append(st.turn)
        if self.block_tokens:
            self.blocks_of.append(self._blocks(st, prompt // self.block_tokens))

    def user_of(self, i: int) -> int:
        return self.user[i]

    # what each kind of user sends (the fleet calls these)

    def starts(self) -> list[float]:
        """When each user sends its first request."""
        raise NotImplementedError

    def capacity(self) -> int:
        """A first guess at how many requests the run sends (records grow beyond it as needed)."""
        raise NotImplementedError

    def send(self, u: int, now: float) -> tuple[int, int, int] | None:
        """User u's next request, sent at `now`: (id, prompt tokens, output tokens), or None when
        the user stops."""
        raise NotImplementedError

    def answered(self, i: int, now: float, served: int | None) -> float | None:
        """Request i ended at `now` with `served` output tokens (None: rejected): the user's
        think time before its next request, or None when it sends no more."""
        raise NotImplementedError

    def counters(self) -> dict:
        """What the summary reports about the users (`sim.results.summary`)."""
        return {"users": self.users, "sessions": self.sessions}

    # ------------------------------------------------------------------ prefix blocks

    def _blocks(self, st: _User, n: int) -> np.ndarray:
        """The session's first n block ids, new ones numbered on from the last id handed out."""
        have = 0 if st.stream is None else len(st.stream)
        if n > have:
            new = np.arange(self._next_block, self._next_block + n - have, dtype=np.int64)
            self._next_block += n - have
            st.stream = new if st.stream is None else np.concatenate([st.stream, new])
        return st.stream[:n]  # type: ignore[index]

    def blocks(self, i: int) -> np.ndarray:
        """Request i's prefix-block ids (its prompt's full blocks)."""
        return self.blocks_of[i]

    def answer_blocks(self, i: int, served: int) -> np.ndarray:
        """The full blocks request i's answer adds to the replica that served it: its KV holds
        the prompt and all but the last of the `served` output tokens (the prompt's own blocks
        were marked used when it arrived). Request i is its user's latest."""
        st = self._state[self.user[i]]
        bt = self.block_tokens
        return self._blocks(st, (self.prompt[i] + served - 1) // bt)[self.prompt[i] // bt :]

    # ------------------------------------------------------------------ results

    def workload(self) -> Workload:
        """The requests sent so far as a workload, in arrival order."""
        n = self.sent
        offsets = ids = None
        if self.block_tokens:
            counts = np.fromiter((len(b) for b in self.blocks_of), np.int64, count=n)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            ids = np.concatenate(self.blocks_of) if n else np.zeros(0, np.int64)
        arrival = np.array(self.arrival, dtype=float)  # copies: the columns keep growing
        last = float(arrival[-1]) if n else 0.0
        # the window requests were sent over: up to the end, unless the request count ended it
        span = self.end if self.end < math.inf and not self.capped else last
        return Workload(
            arrival_s=arrival,
            prompt_tokens=np.array(self.prompt, dtype=np.int64),
            output_tokens=np.array(self.output, dtype=np.int64),
            class_names=(self.name,),
            hash_offsets=offsets,
            hash_ids=ids,
            block_tokens=self.block_tokens,
            span_s=span,
        )

    def columns(self) -> dict[str, np.ndarray]:
        """Per-request columns of requests.parquet: the user, its session and the turn in it (from 1)."""
        return {
            "user": np.array(self.user, dtype=np.int64),
            "session": np.array(self.session, dtype=np.int64),
            "turn": np.array(self.turn, dtype=np.int64),
        }


class ClosedLoop(Conversations):
    """The users of a closed-loop workload and the requests they have sent.

    `block_tokens` > 0 gives every prompt of a multi-turn session its prefix-block ids (for
    prefix caching: pass the engine's block size)."""

    def __init__(self, wc: WorkloadConfig, seed: int, *, block_tokens: int = 0, limits: LimitsConfig | None = None):
        validate_workload(wc)
        multi = multi_turn(wc)
        end = wc.duration_s if wc.duration_s is not None else math.inf
        # one-turn sessions share no prefix
        super().__init__(wc.name, int(wc.users), end, block_tokens if multi else 0)  # type: ignore[arg-type]
        self.wc = wc
        self.limit = wc.requests if wc.requests is not None else math.inf
        self.max_requests = limits.max_requests if limits is not None else math.inf
        self._draws = _Draws(_draws(wc, seed, multi), FIRST_DRAW)
        self._instant = (-1.0, 0)  # the last time a request was sent, and how many were sent then

    # ------------------------------------------------------------------ the loop

    def starts(self) -> list[float]:
        """When each user sends its first request: spread evenly over `ramp_s`."""
        return [self.wc.ramp_s * u / self.users for u in range(self.users)]

    def capacity(self) -> int:
        """A first guess at how many requests the run sends (records grow beyond it as needed)."""
        if self.wc.requests is not None:
            return int(self.wc.requests)
        return int(min(self.users * 8, 1 << 20))

    def send(self, u: int, now: float) -> tuple[int, int, int] | None:
        """User u's next request, sent at `now`: (id, prompt tokens, output tokens), or None when
        the user stops (`requests` sent in all, or `duration_s` reached)."""
        k = self.sent
        if k >= self.limit:
            self.capped = True
            return None
        if now >= self.end:
            return None
        if k >= self.max_requests:
            key, value = ("workload.users", self.users) if self.end == math.inf else ("workload.duration_s", self.end)
            raise ConfigError(
                key,
                value,
                f"the users sent more than limits.max_requests={self.max_requests:,} requests by {now:,.4g} s; "
                "lower it, set workload.requests, or raise limits.max_requests",
            )
        t, same = self._instant
        self._instant = (now, same + 1 if now == t else 1)
        if same >= 100 * self.users:  # each user can send once per instant, unless refused at once
            raise ConfigError(
                "workload.think_time_s",
                self.wc.think_time_s,
                f"the users sent {same:,} requests at t={now:,.6g} s without time passing: each one was rejected "
                "as it arrived; give the users a think time or fix what rejects their requests",
            )
        think, first_prompt, output, turns, extra = self._draws.get(k)
        st = self._state[u]
        if st.turn < st.turns and st.answer is not None:  # the session goes on
            st.turn += 1
            prompt = st.prompt + st.answer + extra
        else:  # a new session (the first, the last one ended, or a turn was rejected)
            st.session, self.sessions = self.sessions, self.sessions + 1
            st.turn, st.turns = 1, turns
            st.stream = None
            prompt = first_prompt
        st.prompt, st.answer, st.think = prompt, None, think
        self._record(u, st, now, prompt, output)
        return k, prompt, output

    def answered(self, i: int, now: float, served: int | None) -> float | None:
        """Request i ended at `now` with `served` output tokens (None: rejected). Returns the
        user's think time before its next request, or None when it will send no more."""
        st = self._state[self.user[i]]
        st.answer = served
        think = st.think
        if self.sent >= self.limit:
            self.capped = True
            return None
        if now + think >= self.end:
            return None
        return think


def closed_workload(
    users: int,
    prompt_tokens: int,
    output_tokens: int,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    think_time_s: float = 0.0,
    think_dist: str = "exponential",
    ramp_s: float = 0.0,
    name: str = "closed",
) -> WorkloadConfig:
    """A closed-loop workload config with fixed lengths: `users` concurrent users, each sending a
    `prompt_tokens`-token request for `output_tokens` tokens, waiting for the answer, thinking
    `think_time_s` (mean) and sending again, until `requests` have been sent in all or
    `duration_s` has passed (give at least one). A benchmark point such as "concurrency 1, input
    8192, output 128, 20 requests":

        cfg = dataclasses.replace(cfg, workload=sim.closed_workload(1, 8192, 128, requests=20))
        sim.run(cfg)

    Checked like any workload: a bad value raises ConfigError naming the key."""
    wc = WorkloadConfig(
        name=name,
        arrival="closed",
        users=users,
        requests=requests,
        duration_s=duration_s,
        think_time_s=think_time_s,
        think_dist=think_dist,
        ramp_s=ramp_s,
        prompt_tokens=LengthConfig(dist="fixed", mean=float(prompt_tokens)),
        output_tokens=LengthConfig(dist="fixed", mean=float(output_tokens)),
    )
    validate_workload(wc)
    return wc
