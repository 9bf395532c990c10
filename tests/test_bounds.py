"""Declarative bounds (sim/config/bounds.py): the rules, their messages, and that every bound
declared on the schema refuses a value just outside it and accepts one just inside."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from sim.config.bounds import FRACTION, NONNEG, POSITIVE, SHARE, Bound, Choice, OneOf, check, declared
from sim.config.errors import ConfigError
from sim.config.names import Router


def test_rules_and_their_messages():
    assert POSITIVE.ok(1e-9) and not POSITIVE.ok(0) and not POSITIVE.ok(float("nan"))
    assert POSITIVE.rule(int) == "must be a positive integer" and POSITIVE.rule(float) == "must be a positive number"
    assert NONNEG.ok(0) and not NONNEG.ok(-1e-12) and NONNEG.rule(float) == "must be >= 0"
    assert FRACTION.ok(1) and not FRACTION.ok(0) and FRACTION.rule(float) == "must be in (0, 1]"
    assert SHARE.ok(0) and SHARE.ok(1) and not SHARE.ok(1.0001) and SHARE.rule(float) == "must be in [0, 1]"
    assert Bound(hi=1_000_000).rule(int) == "must be at most 1,000,000"
    assert Bound(lo=1, why="x").rule(float) == "must be >= 1 (x)"
    assert not POSITIVE.ok(True)  # a boolean is not a number here
    assert OneOf((1, 2)).ok(2) and OneOf((1, 2)).rule(int) == "must be one of 1, 2"


def test_a_choice_is_its_text():
    assert Router.power_of_two == "power_of_two" and f"{Router.power_of_two}" == "power_of_two"
    assert {"power_of_two": 1}[Router.power_of_two] == 1
    assert issubclass(Router, Choice) and "round_robin" in Router.names()


def test_check_names_the_first_field_out_of_bounds():
    @dataclasses.dataclass
    class Thing:
        a: typing.Annotated[float, POSITIVE] = 1.0
        b: typing.Annotated[int, NONNEG] | None = None
        c: Router = Router.round_robin

    check(Thing(), "thing")
    check(Thing(b=None), "thing")  # optional: None allowed
    with pytest.raises(ConfigError, match=r"^thing\.a=0: must be a positive number$"):
        check(Thing(a=0), "thing")
    with pytest.raises(ConfigError, match=r"^thing\.b=-1: must be >= 0$"):
        check(Thing(b=-1), "thing")
    with pytest.raises(ConfigError, match=r"^thing\.c='x': must be one of least_outstanding"):
        check(Thing(c="x"), "thing")  # a raw string set from Python is checked too
    check(Thing(a=0), "thing", skip=("a",))


def _schema_classes():
    from sim.config import schema

    seen, todo = [], [schema.Config, *schema.AUTOSCALER_CONFIGS.values()]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            todo.extend(t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t))
    return seen


@pytest.mark.parametrize("cls", _schema_classes(), ids=lambda c: c.__name__)
def test_every_declared_bound_refuses_just_outside_and_accepts_just_inside(cls):
    """For each bounded numeric field: the bound's edge (inside) passes `ok`, a step outside
    fails, so a declaration cannot be a no-op."""
    for name, (kind, rules) in declared(cls).items():
        for rule in rules:
            if not isinstance(rule, Bound):
                continue
            step = 1 if kind is int else 1e-6
            if rule.lo is not None:
                edge = rule.lo + (step if rule.lo_open else 0)
                assert rule.ok(edge) and not rule.ok(rule.lo - (0 if rule.lo_open else step)), (cls, name)
            if rule.hi is not None:
                edge = rule.hi - (step if rule.hi_open else 0)
                assert rule.ok(edge) and not rule.ok(rule.hi + (0 if rule.hi_open else step)), (cls, name)


def test_the_schema_declares_its_ranges():
    """The checks that used to be written by hand are on the fields now (a sample of them)."""
    from sim.config import schema

    def rules(cls, name):
        return declared(cls)[name][1]

    assert POSITIVE in rules(schema.GpuConfig, "mem_bw_tbps")
    assert FRACTION in rules(schema.EngineConfig, "eta_kv")
    assert SHARE in rules(schema.ApiConfig, "cache_hit_rate")
    assert NONNEG in rules(schema.PricingConfig, "ops_cost_per_month")
    assert any(isinstance(r, OneOf) for r in rules(schema.FleetConfig, "router"))
    assert declared(schema.FleetConfig)["router"][0] is Router
