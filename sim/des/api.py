"""Pay-per-token API backend: admission under rate limits, latency, and price.

Plain Python: the fleet asks `warm_wait` whether the endpoint must warm up first, then `admit`
at the moment a request would start, and, if admitted, draws its latency with `latency`. Limits
are those of the tiers of serverless APIs (seed document 002): requests per minute and tokens
per minute over a sliding 60-second window, a monthly spend cap, and a maximum output length
(which truncates the output, and its bill, or refuses the request). Tiers may rise with lifetime
spend (`api.tiers`). Billing is per token (input, cached input, output) or per second of the
request's execution (`api.billing=per_second`: not its queueing, not the endpoint's warm-up).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sim.config.schema import ApiConfig
from sim.pricing.cost import HOURS_PER_MONTH
from sim.workload.lengths import lognormal_sigma

MONTH_S = HOURS_PER_MONTH * 3600.0
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
        self.truncated = 0  # requests whose output the cap cut short
        self.warmups = 0
        self.billed_s = 0.0  # execution seconds billed (per-second billing)
        self._busy_until = 0.0  # the endpoint is warm while requests run and cold_after_s after
        self._warm_at = 0.0  # end of a warm-up in progress
        # the limits in force: the config's, or those of the tier lifetime spend has reached
        self.rpm, self.tpm, self.max_output, self.cap = cfg.rpm, cfg.tpm, cfg.max_output_tokens, cfg.monthly_cap_usd
        self.tier = -1
        self._upgrade()
        sigma = lognormal_sigma(cfg.ttft_mean_s, cfg.ttft_p99_s)
        self._ttft = (math.log(cfg.ttft_mean_s) - sigma * sigma / 2, sigma)
        s2 = math.log(1 + cfg.tokens_per_s_cv**2)
        self._speed = (math.log(cfg.tokens_per_s_mean) - s2 / 2, math.sqrt(s2))

    @property
    def tier_name(self) -> str | None:
        return self.cfg.tiers[self.tier].name if self.cfg.tiers and self.tier >= 0 else None

    def _upgrade(self) -> None:
        """Move to the highest tier lifetime spend qualifies for."""
        tiers = self.cfg.tiers or []
        lifetime = self.cfg.lifetime_spend_usd + self.spend
        while self.tier + 1 < len(tiers) and tiers[self.tier + 1].min_lifetime_spend_usd <= lifetime:
            self.tier += 1
            t = tiers[self.tier]
            self.rpm, self.tpm, self.max_output, self.cap = t.rpm, t.tpm, t.max_output_tokens, t.monthly_cap_usd

    def served_output(self, output: int) -> int:
        """Output tokens the API returns: the request's, cut at the output cap when it truncates."""
        if self.max_output is not None and output > self.max_output and self.cfg.long_output == "truncate":
            return self.max_output
        return output

    def cost(self, prompt: int, output: int, seconds: float = 0.0) -> float:
        """Price of one request: per token (input split by the cache-hit rate, plus output tokens
        as served), or per second of execution."""
        c = self.cfg
        if c.billing == "per_second":
            return seconds * c.price_per_second
        per_input = (1 - c.cache_hit_rate) * c.price_input_per_m + c.cache_hit_rate * c.price_cached_input_per_m
        return (prompt * per_input + self.served_output(output) * c.price_output_per_m) / 1e6

    def eligible(self, output: int) -> bool:
        return self.max_output is None or output <= self.max_output or self.cfg.long_output == "truncate"

    def warm_wait(self, now: float) -> float:
        """Seconds a request arriving now waits for the endpoint to warm up (0 when warm). An
        endpoint idle for more than `cold_after_s` goes cold; the first request then starts a
        warm-up of `warmup_s`, and every request queues until it ends."""
        c = self.cfg
        if now < self._warm_at:
            return self._warm_at - now
        if c.cold_after_s is None or now - self._busy_until <= c.cold_after_s:
            return 0.0
        self.warmups += 1
        self._warm_at = now + c.warmup_s
        self._busy_until = self._warm_at
        return c.warmup_s

    def running_until(self, finish: float) -> None:
        """An admitted request runs until `finish`: the endpoint stays warm at least that long."""
        self._busy_until = max(self._busy_until, finish)

    def admit(self, now: float, prompt: int, output: int, seconds: float = 0.0) -> str | None:
        """Start the request now if every limit allows; return None, or the limit that refused.
        `seconds`: its execution time, for per-second billing."""
        starts, tokens = self._starts, self._tokens
        while starts and starts[0] <= now - WINDOW_S:
            starts.popleft()
        while tokens and tokens[0][0] <= now - WINDOW_S:
            self._window_tokens -= tokens.popleft()[1]
        price = self.cost(prompt, output, seconds)
        month = int(now // MONTH_S)
        if month != self._month:
            self._month, self._month_spend = month, 0.0
        served = self.served_output(output)
        used = prompt + served
        reason = self._refusal(output, used, price)
        if reason is not None:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1
            return reason
        starts.append(now)
        tokens.append((now, used))
        self._window_tokens += used
        self._month_spend += price
        self.spend += price
        self.billed_s += seconds
        self.truncated += served < output
        if self.cfg.tiers:
            self._upgrade()
        return None

    def _refusal(self, output: int, used: int, price: float) -> str | None:
        """The first limit that refuses a request of `used` tokens costing `price`, or None."""
        if not self.eligible(output):
            return REFUSE_LENGTH
        if self.tpm is not None and used > self.tpm:
            return REFUSE_TOO_LARGE
        if self.rpm is not None and len(self._starts) >= self.rpm:
            return REFUSE_RPM
        if self.tpm is not None and self._window_tokens + used > self.tpm:
            return REFUSE_TPM
        if self.cap is not None and self._month_spend + price > self.cap:
            return REFUSE_CAP
        return None

    def latency(self, prompt: int = 0) -> tuple[float, float]:
        """(TTFT, seconds per output token after the first) for one request; with
        `prefill_tokens_per_s`, TTFT grows by prompt / that rate."""
        ttft = float(self.rng.lognormal(*self._ttft))
        if self.cfg.prefill_tokens_per_s:
            ttft += prompt / self.cfg.prefill_tokens_per_s
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
