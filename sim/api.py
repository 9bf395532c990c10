"""Pay-per-token API backend: admission under rate limits, latency, and price.

Plain Python: the fleet asks `admit` at the moment a request would start, and, if admitted,
draws its latency with `latency` and books its cost with `cost`. Limits are those of the tiers
of serverless APIs (seed document 002): requests per minute and tokens per minute over a sliding
60-second window, a monthly spend cap, and a maximum output length.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sim.config import ApiConfig
from sim.lengths import lognormal_sigma

MONTH_S = 30 * 86_400.0
WINDOW_S = 60.0

REFUSE_RPM, REFUSE_TPM, REFUSE_CAP, REFUSE_LENGTH = "rpm", "tpm", "monthly_cap", "max_output_tokens"
REFUSE_TOO_LARGE = "tpm_request_too_large"  # more tokens than a whole minute's allowance: never admitted


class ApiBackend:
    def __init__(self, cfg: ApiConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self._starts: deque[float] = deque()  # start times in the last window
        self._tokens: deque[tuple[float, int]] = deque()
        self._window_tokens = 0
        self._month = -1
        self._month_spend = 0.0
        self.spend = 0.0
        self.refusals: dict[str, int] = {}
        sigma = lognormal_sigma(cfg.ttft_mean_s, cfg.ttft_p99_s)
        self._ttft = (math.log(cfg.ttft_mean_s) - sigma * sigma / 2, sigma)
        s2 = math.log(1 + cfg.tokens_per_s_cv**2)
        self._speed = (math.log(cfg.tokens_per_s_mean) - s2 / 2, math.sqrt(s2))

    def cost(self, prompt: int, output: int) -> float:
        """Price of one request: input tokens split by the cache-hit rate, plus output tokens."""
        c = self.cfg
        per_input = (1 - c.cache_hit_rate) * c.price_input_per_m + c.cache_hit_rate * c.price_cached_input_per_m
        return (prompt * per_input + output * c.price_output_per_m) / 1e6

    def eligible(self, output: int) -> bool:
        return self.cfg.max_output_tokens is None or output <= self.cfg.max_output_tokens

    def admit(self, now: float, prompt: int, output: int) -> str | None:
        """Start the request now if every limit allows; return None, or the limit that refused."""
        c = self.cfg
        starts, tokens = self._starts, self._tokens
        while starts and starts[0] <= now - WINDOW_S:
            starts.popleft()
        while tokens and tokens[0][0] <= now - WINDOW_S:
            self._window_tokens -= tokens.popleft()[1]
        reason = None
        price = self.cost(prompt, output)
        month = int(now // MONTH_S)
        if month != self._month:
            self._month, self._month_spend = month, 0.0
        if not self.eligible(output):
            reason = REFUSE_LENGTH
        elif c.tpm is not None and prompt + output > c.tpm:
            reason = REFUSE_TOO_LARGE
        elif c.rpm is not None and len(starts) >= c.rpm:
            reason = REFUSE_RPM
        elif c.tpm is not None and self._window_tokens + prompt + output > c.tpm:
            reason = REFUSE_TPM
        elif c.monthly_cap_usd is not None and self._month_spend + price > c.monthly_cap_usd:
            reason = REFUSE_CAP
        if reason is not None:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1
            return reason
        starts.append(now)
        tokens.append((now, prompt + output))
        self._window_tokens += prompt + output
        self._month_spend += price
        self.spend += price
        return None

    def latency(self) -> tuple[float, float]:
        """(TTFT, seconds per output token after the first) for one request."""
        ttft = float(self.rng.lognormal(*self._ttft))
        speed = float(self.rng.lognormal(*self._speed))
        return ttft, 1.0 / speed

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform in [cap / 2, cap], cap = min(max, base x factor^attempt)."""
        c = self.cfg
        # base x factor^attempt reaches the maximum after a few dozen attempts; past that, the
        # power itself would overflow a float
        grown = attempt * math.log(c.backoff_factor) if c.backoff_factor > 1 else 0.0
        if c.backoff_base_s <= 0 or grown >= math.log(c.backoff_max_s / c.backoff_base_s):
            cap = c.backoff_max_s
        else:
            cap = c.backoff_base_s * math.exp(grown)
        return float(self.rng.uniform(0.5, 1.0)) * cap
