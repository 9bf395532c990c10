"""`hydra/sweeper=cost_slo`: Optuna's TPE looks for the cheapest configuration that meets the SLO.

One objective, the job's return (`sim.studies.sweep.objective`): its cost rate when it meets the
SLO, a penalty above any feasible cost when it does not. The space comes from the overrides
(`hydra.sweeper.params` and the command line), and means what it means in a grid sweep:
`range(1,9)` is 1..8 (an integer distribution 1..8, both ends included), `choice(a,b)` is a
or b, `interval(a,b)` (continuous) is a..b, both ends included. No configuration runs twice: a
proposal of one already run (in this study, or an earlier one in the same storage) is recorded
as a failed trial, which the sampler ignores, and not launched; `n_trials` counts the
configurations simulated, and a discrete space smaller than it ends the search when every point
has run. Keys declared monotone (`hydra.sweeper.monotone`, fleet.replicas in the preset: more of
it never hurts the SLO and never lowers the cost) let one result rule out others without running
them: a configuration that misses rules out every one with less of the key, all else equal; one
that meets the SLO rules out every one with more. Optuna (>= 3.2, any SQLAlchemy 2) is imported
when the sweep starts (extra `optuna`).

Hydra loads sweepers only from the `hydra_plugins` package: `hydra_plugins/fleetsim_sweeper`
declares the plugin class, this module implements it.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

from sim.config.errors import ConfigError
from sim.studies.sweep import FAILED, INFEASIBLE

REPEATS_BEFORE_FALLBACK = 10  # proposals of configurations already run, in a row, before one is drawn at random


@dataclass(frozen=True)
class Dimension:
    """One searched key: every value a grid sweep would run (discrete), or an interval."""

    name: str
    values: tuple = ()  # discrete: the grid's values, in order
    low: float | None = None  # continuous: both ends included
    high: float | None = None
    log: bool = False

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if not self.values:
            if isinstance(self.low, int) and isinstance(self.high, int):
                return IntDistribution(self.low, self.high, log=self.log)
            return FloatDistribution(float(self.low), float(self.high), log=self.log)
        v = self.values
        step = v[1] - v[0] if len(v) > 1 and all(isinstance(x, int) and not isinstance(x, bool) for x in v) else 0
        if step > 0 and list(v) == list(range(v[0], v[-1] + 1, step)):
            return IntDistribution(v[0], v[-1], step=step)  # ordered: TPE models nearness
        return CategoricalDistribution(v)


def dimension(o: Override) -> Dimension:
    """The searched values of one sweep override, as a grid sweep would expand them."""
    key = o.get_key_element()
    value = o.value()
    if isinstance(value, IntervalSweep):
        if value.start is None or value.end is None or value.start >= value.end:
            raise ConfigError(key, o.get_value_element_as_str(), "an interval needs start < end")
        return Dimension(key, low=value.start, high=value.end, log="log" in value.tags)
    values = tuple(o.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise ConfigError(key, o.get_value_element_as_str(), "searches no value")
    if isinstance(value, RangeSweep) and value.shuffle:
        values = tuple(sorted(values))
    return Dimension(key, values=values)


def search_space(arguments: Sequence[str]) -> tuple[list[Dimension], dict[str, str]]:
    """The searched dimensions and the fixed overrides; a later override of a key replaces an
    earlier one (the command line replaces `hydra.sweeper.params`)."""
    parsed = OverridesParser.create().parse_overrides(list(arguments))
    by_key: dict[str, Override] = {o.get_key_element(): o for o in parsed}
    dims = [dimension(o) for o in by_key.values() if o.is_sweep_override()]
    fixed = {k: o.get_value_element_as_str() for k, o in by_key.items() if not o.is_sweep_override()}
    return dims, fixed


def space_size(dims: list[Dimension]) -> int | None:
    """Points in a discrete space; None when a dimension is continuous."""
    return math.prod(len(d.values) for d in dims) if all(d.values for d in dims) else None


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class CostSloSweeperImpl(Sweeper):
    """Ask-and-tell with Optuna over the launcher: `n_jobs` trials per batch, each batch one
    launch (joblib, Ray, SLURM run it), until `n_trials` configurations have run."""

    def __init__(
        self,
        n_trials: int = 30,
        n_startup_trials: int = 10,
        n_jobs: int = 2,
        seed: int | None = 0,
        storage: str | None = None,
        study_name: str = "fleetsim-cost-slo",
        params: Any = None,
        monotone: Any = None,
    ):
        self.n_trials, self.n_startup_trials, self.n_jobs = n_trials, n_startup_trials, n_jobs
        self.seed, self.storage, self.study_name = seed, storage, study_name
        self.params = dict(params or {})
        self.monotone = tuple(monotone or ())
        for key, ok, allowed in (
            ("n_trials", n_trials >= 1, "must be >= 1"),
            ("n_jobs", n_jobs >= 1, "must be >= 1"),
            ("n_startup_trials", 0 <= n_startup_trials < n_trials, f"must be >= 0 and below n_trials ({n_trials})"),
        ):
            if not ok:
                raise ConfigError(f"hydra.sweeper.{key}", getattr(self, key), allowed)
        self.launcher = None
        self.job_idx = 0
        self.fixed_key = ""

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.job_idx = 0
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def study(self):
        try:
            import optuna
        except ImportError:
            raise ConfigError("hydra/sweeper", "cost_slo", "needs Optuna: pip install 'fleetsim[optuna]'") from None
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the jobs and the callback report
        sampler = optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials, multivariate=True, constant_liar=self.n_jobs > 1
        )
        return optuna.create_study(
            study_name=self.study_name, storage=self.storage, sampler=sampler, direction="minimize", load_if_exists=True
        )

    def sweep(self, arguments: list[str]) -> None:
        from optuna.trial import TrialState

        dims, fixed = search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        if not dims:
            raise ConfigError("hydra.sweeper.params", "{}", "search at least one key (key=range(...) or choice(...))")
        study = self.study()
        dists = {d.name: d.distribution() for d in dims}
        off = monotone_off(dims, fixed) if self.monotone else ""
        rule = MonotoneRule(dims, () if off else self.monotone)
        self.fixed_key = json.dumps(sorted(fixed.items()))
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        seen = {_key(t.params) for t in done}
        for t in done:  # an earlier study of the same fixed overrides rules out what its results rule out
            if t.user_attrs.get("fixed") == self.fixed_key:
                rule.apply(t.params, t.value, seen)
        size, rng, ran, skipped = space_size(dims), random.Random(self.seed), 0, 0
        while ran < self.n_trials and (size is None or len(seen) < size):
            batch, repeats = self._ask(study, dists, dims, seen, min(self.n_jobs, self.n_trials - ran), rng)
            skipped += repeats
            if not batch:
                break
            overrides = [tuple(f"{k}={v}" for k, v in {**params, **fixed}.items()) for _, params in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for (trial, params), ret in zip(batch, returns, strict=True):
                value = _value(ret)
                study.tell(trial, value)
                rule.apply(params, value, seen)
            ran += len(batch)
        best = study.best_trial if any(t.state == TrialState.COMPLETE for t in study.trials) else None
        print(
            f"fleetsim cost_slo: {ran} configurations simulated"
            + (f" of {size}" if size is not None else "")
            + (
                f"; {rule.ruled_out} ruled out without running ({', '.join(rule.keys)} monotone)"
                if rule.ruled_out
                else ""
            )
            + (f"; {skipped} proposals of configurations already run or ruled out, not run" if skipped else "")
            + (f"; best objective {best.value:,.4g} at {best.params}" if best is not None else "")
            + (f"; the monotone rule is off: {off}" if off else "")
        )

    def _ask(self, study, dists: dict, dims: list[Dimension], seen: set, want: int, rng: random.Random):
        """Up to `want` trials of configurations not run yet (marked in `seen`); the number of
        repeated proposals recorded as failed trials on the way."""
        from optuna.trial import TrialState

        batch, repeats, in_a_row = [], 0, 0
        while len(batch) < want:
            if in_a_row >= REPEATS_BEFORE_FALLBACK:  # the sampler keeps to what it has run: draw a new point
                point = _unseen(dims, seen, rng)
                if point is None:
                    break
                study.enqueue_trial(point)
                in_a_row = 0
            trial = study.ask(dists)
            key = _key(trial.params)
            if key in seen:
                trial.set_user_attr("repeat", True)
                study.tell(trial, state=TrialState.FAIL)
                repeats += 1
                in_a_row += 1
                continue
            seen.add(key)
            trial.set_user_attr("fixed", self.fixed_key)  # what a resumed study may infer from
            batch.append((trial, dict(trial.params)))
            in_a_row = 0
        return batch, repeats


NOT_MONOTONE = ("api", "fleet.router", "fleet.autoscaler", "fleet.min_replicas", "fleet.max_replicas")


def monotone_off(dims: list[Dimension], fixed: dict[str, str]) -> str:
    """Why more replicas may not mean a better SLO at a higher cost here ('' if nothing says
    so): an API that takes the overflow (more replicas: less API spend), or a router or
    autoscaler chosen on the command line (replica counts then start or bound a fleet)."""
    plain = {"api": "none", "fleet": "fixed"}  # group choices that keep a fixed fleet with no API
    keys = [*(d.name for d in dims), *(k for k, v in fixed.items() if plain.get(k.lstrip("+~")) != v)]
    for key in keys:
        bare = key.lstrip("+~")
        if bare == "fleet" or any(bare == k or bare.startswith(f"{k}.") for k in NOT_MONOTONE):
            return f"{bare} is set (an API's overflow, a router or an autoscaler can make more replicas cost less)"
    return ""


class MonotoneRule:
    """What one result says about configurations not run, for keys declared monotone (more of the
    key: the SLO met at least as well, the cost at least as high; a fixed fleet's replica count).
    A miss rules out every configuration with less of such a key and the other keys equal (they
    miss too); a configuration that meets the SLO rules out every one with more (they cost more).
    A failed job rules out nothing. Keys declared but not searched, or searched over an interval,
    are left alone."""

    def __init__(self, dims: list[Dimension], monotone: Sequence[str]):
        self.dims = {
            d.name: d.values
            for d in dims
            if d.name in monotone and d.values and all(isinstance(v, (int, float)) for v in d.values)
        }
        self.keys = tuple(self.dims)
        self.ruled_out = 0

    def apply(self, params: dict, value: float | None, seen: set) -> None:
        if value is None or not math.isfinite(value) or value >= FAILED:
            return
        missed = value >= INFEASIBLE
        for name, values in self.dims.items():
            if name not in params:
                continue
            for v in values:
                if (v < params[name]) if missed else (v > params[name]):
                    key = _key({**params, name: v})
                    if key not in seen:
                        seen.add(key)
                        self.ruled_out += 1


def _unseen(dims: list[Dimension], seen: set, rng: random.Random, tries: int = 10_000) -> dict | None:
    """A configuration not run yet, drawn at random (None: the discrete space is exhausted)."""
    for _ in range(tries):
        point = {d.name: rng.choice(d.values) if d.values else rng.uniform(float(d.low), float(d.high)) for d in dims}
        if _key(point) not in seen:
            return point
    return None


def _value(ret) -> float:
    """A job's objective; FAILED when it raised or returned nothing usable."""
    try:
        value = float(ret.return_value)
    except Exception as exc:
        print(f"fleetsim cost_slo: a job failed: {exc}", file=sys.stderr)
        return FAILED
    return value if math.isfinite(value) else FAILED
