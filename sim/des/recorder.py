"""The fleet's time series, kept live: hooks the fleet calls as requests enter and leave the
system and the lifecycle (`sim.des.lifecycle`) as replica spans close, and `close_bin`, which
turns one interval into a row of `SAMPLE_COLUMNS` (`des.records`). No SimPy: the fleet passes the
clock."""

from __future__ import annotations


class Recorder:
    def __init__(self) -> None:
        self.samples: list[tuple] = []
        self.in_system = 0  # requests arrived and not yet ended
        self.tokens_done = 0  # prompt + output tokens of the requests served so far
        self.gpu_cost_closed = 0.0  # the cost of closed replica spans
        self.awake_closed = 0.0  # replica-seconds of closed active and draining spans
        self._area = 0.0  # integral of in_system over the current bin
        self._last = 0.0
        self._arrivals = 0
        self._completions = 0
        self._api_started = 0
        self._bin_start = 0.0
        self._busy_prev = self._occ_prev = self._awake_prev = 0.0

    # ------------------------------------------------------------------ hooks

    def arrived(self) -> None:
        """A request arrived (counted even when it is rejected at once)."""
        self._arrivals += 1

    def entered(self, now: float) -> None:
        """A request entered the system (routed, queued or sent to the API)."""
        self._area += self.in_system * (now - self._last)
        self._last = now
        self.in_system += 1

    def served(self, now: float, tokens: int) -> None:
        """A request in the system ended, served (by a replica or the API)."""
        self._area += self.in_system * (now - self._last)
        self._last = now
        self.in_system -= 1
        self._completions += 1
        self.tokens_done += tokens

    def dropped(self, now: float) -> None:
        """A request in the system ended without being served (rejected after entering)."""
        self._area += self.in_system * (now - self._last)
        self._last = now
        self.in_system -= 1

    def api_started(self) -> None:
        self._api_started += 1

    def span_closed(self, cost: float, awake_s: float) -> None:
        """A replica left a state: its cost there, and its seconds if it could serve (else 0)."""
        self.gpu_cost_closed += cost
        if awake_s:
            self.awake_closed += awake_s

    # ------------------------------------------------------------------ rows

    def close_bin(self, now: float, busy: float, occ: float, awake: float, fleet_row: tuple, costs: tuple) -> None:
        """Close the current bin at `now`: one row from the bin's counters and integrals, the
        replica-time integrals so far (busy, occupancy, awake) and the fleet's state at `now`
        (`fleet_row`: router queue, queued, running, KV use; `costs`: replica counts by state
        are in the middle, see SAMPLE_COLUMNS)."""
        self._area += self.in_system * (now - self._last)
        self._last = now
        span = now - self._bin_start
        if span <= 0:
            return
        router_queue, queued, running, kv_util, counts = fleet_row
        gpu_cost, api_cost = costs
        d_awake = awake - self._awake_prev
        self.samples.append(
            (
                self._bin_start,
                span,
                self._arrivals,
                self._completions,
                self._area / span,
                router_queue,
                queued,
                running,
                kv_util,
                (occ - self._occ_prev) / d_awake if d_awake > 0 else 0.0,
                (busy - self._busy_prev) / d_awake if d_awake > 0 else 0.0,
                *counts,
                self._api_started,
                gpu_cost,
                api_cost,
                gpu_cost + api_cost,
            )
        )
        self._busy_prev, self._occ_prev, self._awake_prev = busy, occ, awake
        self._arrivals = self._completions = self._api_started = 0
        self._area = 0.0
        self._bin_start = now
