"""``@frozen_record``: a frozen, slotted dataclass with a cheaper ``__init__``, which must
behave exactly as the dataclass's own: the same signature, defaults, factories, errors and
guarantees."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import InitVar, dataclass, field
from typing import Any

import pytest

from core.exchange import Draft
from core.models import Conversation, Turn
from core.records import frozen_record
from core.storage.conversations import UsageRecord
from core.title_batch import Pending
from core.turn import ChatRequest, ChatResult, StartInfo


def _fields() -> Any:
    """The same class body for both: the dataclass's own __init__, and @record's."""

    class Fields:
        name: str
        size: int = 3
        tags: list[str] = field(default_factory=list)
        seen: tuple[int, ...] = ()
        hidden: int = field(default=7, init=False)
        made: dict[str, int] = field(default_factory=dict, init=False)
        note: str | None = field(default=None, kw_only=True)
        level: int = field(kw_only=True, default_factory=lambda: 5)

    return Fields


Standard = dataclass(frozen=True, slots=True)(_fields())
Fast = frozen_record(_fields())

@frozen_record
class Point:
    x: int
    y: int = 0


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a",), {}),
    (("a", 4), {}),
    (("a", 4, ["x"], (1, 2)), {}),
    ((), {"name": "a", "tags": ["y"], "note": "n", "level": 9}),
    (("a",), {"seen": (3,), "size": 0}),
]


def test_the_cheaper_init_is_the_one_in_use() -> None:
    assert Fast.__init__ is not Standard.__init__
    assert "_FACTORY" in Fast.__init__.__globals__
    assert str(inspect.signature(Fast)) == str(inspect.signature(Standard))


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_a_record_is_made_as_its_dataclass_would_be(args: tuple[Any, ...],
                                                    kwargs: dict[str, Any]) -> None:
    fast, standard = Fast(*args, **kwargs), Standard(*args, **kwargs)
    assert dataclasses.astuple(fast) == dataclasses.astuple(standard)
    assert repr(fast).removeprefix("Fields") == repr(standard).removeprefix("Fields")
    assert fast == Fast(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}),                                 # a required field missing
    (("a", 1, [], (), 9), {}),                # one positional too many
    (("a",), {"colour": "red"}),              # no such field
    (("a",), {"hidden": 1}),                  # not an __init__ field
    (("a", 1, [], (), None), {}),             # keyword-only given by position
    (("a",), {"name": "b"}),                  # given twice
])
def test_wrong_arguments_are_refused_as_the_dataclass_refuses_them(
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        Standard(*args, **kwargs)
    with pytest.raises(TypeError):
        Fast(*args, **kwargs)


def test_a_record_stays_frozen_and_keeps_what_a_dataclass_gives() -> None:
    one = Fast("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.size = 4  # type: ignore[misc]
    assert Fast("a").tags is not one.tags  # each gets its own from the factory
    changed = dataclasses.replace(one, size=9, note="n")
    assert (changed.size, changed.note, changed.name, changed.hidden) == (9, "n", "a", 7)
    assert Fast("a", seen=(1,)) != Fast("a")
    assert {Point(1): "a"}[Point(1, 0)] == "a"  # hashable by value, as a frozen dataclass
    assert pickle.loads(pickle.dumps(Point(1, 2))) == Point(1, 2)


def test_a_class_with_post_init_or_initvar_keeps_the_dataclass_init() -> None:
    @frozen_record
    class Checked:
        size: int

        def __post_init__(self) -> None:
            if self.size < 0:
                raise ValueError("negative")

    with pytest.raises(ValueError):
        Checked(-1)

    @frozen_record
    class WithInitVar:
        size: int
        scale: InitVar[int] = 1

    assert WithInitVar(2, 3).size == 2
    for kept in (Checked, WithInitVar):
        assert "_FACTORY" not in kept.__init__.__globals__  # type: ignore[misc]


@pytest.mark.parametrize("cls", [ChatRequest, ChatResult, Conversation, Turn, UsageRecord,
                                 Draft, StartInfo, Pending])
def test_the_records_made_on_every_request_are_cheap_to_make(cls: type) -> None:
    assert "_FACTORY" in cls.__init__.__globals__  # type: ignore[misc]
    assert dataclasses.fields(cls)  # still a dataclass, frozen
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_a_record_inherits_a_records_fields() -> None:
    @frozen_record
    class Base:
        a: int
        b: list[int] = field(default_factory=list)

    @frozen_record
    class Child(Base):
        c: str = "c"

    child = Child(1, [2], "x")
    assert (child.a, child.b, child.c) == (1, [2], "x")
    assert Child(1).b == [] and Child(1).b is not Child(1).b
    assert "_FACTORY" in Child.__init__.__globals__  # type: ignore[misc]


@pytest.mark.parametrize("name", ["_FACTORY", "_set_a", "_make_x", "_default_y"])
def test_a_field_named_as_the_generated_codes_own_keeps_the_dataclass_init(name: str) -> None:
    namespace: dict[str, Any] = {"__annotations__": {"a": "int", name: "int"}, name: 7,
                                 "__module__": __name__}
    cls = frozen_record(type("Clash", (), namespace))
    assert "_FACTORY" not in cls.__init__.__globals__  # type: ignore[misc]
    made = cls(1)  # type: ignore[call-arg]
    assert (made.a, getattr(made, name)) == (1, 7)
