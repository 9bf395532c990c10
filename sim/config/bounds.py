"""Declarative bounds on config fields, and the closed sets' Enum base.

A field declares its allowed range in its type, `Positive[float]`, `NonNeg[int] | None`,
`Annotated[float, at_least(1)]`, or its closed set as an Enum (`Router`, `Overflow`, ...; see
`sim.config.names`) or `OneOf(...)`; `check(obj, key)` walks a dataclass and raises ConfigError
naming the first field out of its bounds, its value and the rule. Rules that relate two fields (a
window shorter than another, a count that depends on the arrival process) stay next to the
group's checks in `sim.config.schema`.

OmegaConf and `typing.get_type_hints` see through `Annotated`, so a bounded field is composed,
typed and written as its plain type.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, TypeVar

from sim.config.errors import ConfigError

T = TypeVar("T")


class Choice(str, Enum):
    """A closed set of names: compares, hashes, formats and serialises as its text."""

    def __str__(self) -> str:
        return str.__str__(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


@dataclass(frozen=True)
class Bound:
    """lo <(=) value <(=) hi; `why` is added to the message."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def rule(self, kind: Any) -> str:
        if self.lo == 0 and self.lo_open and self.hi is None:
            text = "must be a positive integer" if kind is int else "must be a positive number"
        elif self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            text = f"must be in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        elif self.lo is not None:
            text = f"must be {'>' if self.lo_open else '>='} {_num(self.lo)}"
        else:
            text = f"must be at most {_num(self.hi)}" if not self.hi_open else f"must be < {_num(self.hi)}"
        return f"{text} ({self.why})" if self.why else text


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e8 else f"{x:g}"


@dataclass(frozen=True)
class OneOf:
    """A closed set of values that are not identifiers (block sizes, profiler versions)."""

    values: tuple
    why: str = ""

    def ok(self, value: Any) -> bool:
        return value in self.values

    def rule(self, kind: Any) -> str:
        text = f"must be one of {', '.join(str(v) for v in self.values)}"
        return f"{text} ({self.why})" if self.why else text


POSITIVE = Bound(lo=0, lo_open=True)
NONNEG = Bound(lo=0)
FRACTION = Bound(lo=0, hi=1, lo_open=True)  # (0, 1]
SHARE = Bound(lo=0, hi=1)  # [0, 1]


def at_least(lo: float, why: str = "") -> Bound:
    return Bound(lo=lo, why=why)


def at_most(hi: float, why: str = "") -> Bound:
    return Bound(hi=hi, why=why)


Positive = Annotated[T, POSITIVE]
NonNeg = Annotated[T, NONNEG]
Fraction = Annotated[T, FRACTION]
Share = Annotated[T, SHARE]


def _rules(hint: Any) -> tuple[Any, list]:
    """The plain type of a field's hint and the bounds it declares (Optional and Annotated
    unwrapped; an Enum type is its own closed set)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        hint = next(a for a in args if a is not type(None))
    rules = []
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
        rules = [m for m in meta if isinstance(m, (Bound, OneOf))]
    if isinstance(hint, type) and issubclass(hint, Enum):
        rules.append(OneOf(tuple(m.value for m in hint)))
    return hint, rules


_HINTS: dict[type, dict[str, tuple[Any, list]]] = {}


def declared(cls: type) -> dict[str, tuple[Any, list]]:
    """Each field of a dataclass with its plain type and declared rules (cached per class)."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _HINTS[cls] = {f.name: _rules(hints[f.name]) for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def check(obj: Any, key: str, *, skip: tuple[str, ...] = ()) -> None:
    """Every field of the dataclass `obj` within its declared rules (None is allowed where the
    field is optional; nested dataclasses are checked by their own group), else ConfigError
    naming `key.field`."""
    for name, (kind, rules) in declared(type(obj)).items():
        if name in skip or not rules:
            continue
        value = getattr(obj, name)
        if value is None:
            continue
        for rule in rules:
            if not rule.ok(value):
                raise ConfigError(f"{key}.{name}" if key else name, value, rule.rule(kind))
