"""Multi-turn sessions replayed from a trace (`workload=trace workload.format=sessions`): the
closed loop of `sim.workload.closedloop` with the trace's sessions as its users.

A session's first turn arrives at its timestamp (seconds from the earliest session's start);
turn i+1 arrives when turn i has ended (served by a replica, served by the API, or rejected) and
the user has thought for turn i+1's `think_time_s` (the trace's column, or `workload.think_time_s`
where it is absent or empty). Later turns' own timestamps are not arrival times: in a closed
loop a turn cannot be sent before the previous answer is back, however fast the logged service
was. A rejected turn ends its session, as a user who got an error gives up: the session's later
turns are never sent (the summary counts them as `turns_unsent`, with the turns that fall at or
after `workload.duration_s`).

The conversation is a growing shared prefix. Turn i+1's prompt begins with the conversation so
far, turn i's prompt and the answer it got, up to turn i+1's own length: when the trace's prompt
is shorter than that (a client that trims history or drops part of an answer), the shared prefix
is capped at the new prompt's length, and the session's blocks beyond it are dropped, so the
turn's answer continues from there. With prefix caching the prompt's full blocks carry the
session's block ids (`Conversations`), which a replica's cache and the prefix-aware router see.
Everything is decided by the trace and the fleet's answers: no randomness.

Plain Python and NumPy; the SimPy side is in `sim.des.fleet`, which drives it as it drives
`ClosedLoop`.
"""

from __future__ import annotations

import math

import numpy as np

from sim.config.schema import WorkloadConfig, resolve_path, validate_workload
from sim.workload.closedloop import Conversations
from sim.workload.traces import SessionTrace, read_sessions


def read_session_trace(wc: WorkloadConfig) -> SessionTrace:
    """The session trace of `wc` (workload.path, in workload.time_unit)."""
    return read_sessions(resolve_path(str(wc.path)), time_unit=wc.time_unit)


class SessionReplay(Conversations):
    """The sessions of a trace as closed-loop users: user u is the u-th session to start.

    `block_tokens` > 0 gives every prompt of a multi-turn session its prefix-block ids (for
    prefix caching: pass the engine's block size)."""

    def __init__(self, wc: WorkloadConfig, trace: SessionTrace | None = None, *, block_tokens: int = 0):
        validate_workload(wc)
        self.trace = read_session_trace(wc) if trace is None else trace
        tr = self.trace
        end = wc.duration_s if wc.duration_s is not None else math.inf
        multi = bool((np.diff(tr.offsets) > 1).any())
        super().__init__(wc.name, len(tr.start_s), end, block_tokens if multi else 0)  # one-turn sessions share nothing
        self.think = np.where(np.isnan(tr.think_s), wc.think_time_s, tr.think_s).tolist()
        self._prompts = tr.prompt_tokens.tolist()
        self._outputs = tr.output_tokens.tolist()
        self._offsets = tr.offsets.tolist()
        self._turn_ids = tr.turn.tolist()
        self.row: list[int] = []  # per request sent: its row in the trace (session-grouped order)

    def starts(self) -> list[float]:
        """When each session sends its first turn: its timestamp."""
        return self.trace.start_s.tolist()

    def capacity(self) -> int:
        return len(self.trace)

    def send(self, u: int, now: float) -> tuple[int, int, int] | None:
        """Session u's next turn, sent at `now`: (id, prompt tokens, output tokens), or None when
        the session sends no more (`duration_s` reached, or no turn left)."""
        st = self._state[u]
        row = self._offsets[u] + st.turn
        if now >= self.end or row >= self._offsets[u + 1]:
            return None
        prompt, output = self._prompts[row], self._outputs[row]
        if st.turn == 0:
            st.session, self.sessions = u, self.sessions + 1
        elif self.block_tokens and st.stream is not None and prompt < st.prompt + st.answer:  # type: ignore[operator]
            st.stream = st.stream[: prompt // self.block_tokens]  # history trimmed: the shared prefix ends here
        st.turn += 1
        st.prompt, st.answer = prompt, None
        k = self.sent
        self.row.append(row)
        self._record(u, st, now, prompt, output)
        return k, prompt, output

    def answered(self, i: int, now: float, served: int | None) -> float | None:
        """Request i ended at `now` with `served` output tokens (None: rejected). Returns the
        think time before its session's next turn, or None when the session sends no more."""
        u = self.user[i]
        st = self._state[u]
        st.answer = served
        row = self._offsets[u] + st.turn
        if served is None or row >= self._offsets[u + 1]:  # a rejected turn ends its session
            return None
        think = self.think[row]
        return None if now + think >= self.end else think

    def counters(self) -> dict:
        """The summary's session counts: sessions started and the trace's turns never sent."""
        return {"users": self.users, "sessions": self.sessions, "turns_unsent": len(self.trace) - self.sent}

    def columns(self) -> dict[str, np.ndarray]:
        """Per-request columns: the session (`user` = `session`: its index in start order), the
        turn's number in the trace (`turn`) and the trace's session id (`session_id`)."""
        cols = super().columns()
        rows = np.array(self.row, dtype=np.int64)
        cols["turn"] = self.trace.turn[rows]
        cols["session_id"] = self.trace.session_id[cols["user"]]
        return cols
