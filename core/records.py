"""``@frozen_record``: ``@dataclass(frozen=True, slots=True)`` whose ``__init__`` costs less.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__(self, name, value)``
(its own ``__setattr__`` refuses), about a quarter of a microsecond a field on Python 3.11:
the records a request makes (its ``ChatRequest``, ``Turn``, ``Conversation``, usage row and
``ChatResult``, 74 fields) cost about 40,000 instructions that way, 4% of the event loop's
work on a ``/v1`` request (issue 14, callgrind). ``@frozen_record`` keeps everything the dataclass
gives (the fields, their defaults and factories, ``eq``, ``hash``, ``repr``, refusal to be
changed, ``dataclasses.replace``, pickling) and replaces only ``__init__`` with one that sets
each slot through its descriptor, bound once: less than half the cost.

Supported: fields with or without a default or a default factory, keyword-only fields,
fields left out of ``__init__``, a record inheriting another's fields. A class with a
``__post_init__``, an ``InitVar`` or a field named as the generated code's own names
(``self``, ``_FACTORY``, ``_set_…``, ``_make_…``, ``_default_…``) keeps the dataclass's own
``__init__``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


class _Factory:
    """Marks an argument left to its field's default factory (shown as the dataclass shows
    it, in signatures and help)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()
_HELPERS = ("_FACTORY", "_set_", "_make_", "_default_")
"""The generated ``__init__``'s own names: a field named so keeps the dataclass's."""


# frozen_default: Python 3.12's name, taken (and kept) by 3.11's as an extra keyword; mypy
# reads it, so the records are known to be frozen.
@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,
                                                             dataclasses.Field))
def frozen_record(cls: type[T]) -> type[T]:
    made: Any = dataclasses.dataclass(frozen=True, slots=True)(cls)
    if hasattr(made, "__post_init__") or any(
            f.name == "self" or f.name.startswith(_HELPERS) for f in dataclasses.fields(made)):
        return made  # type: ignore[no-any-return]
    init = _slot_init(made)
    # An InitVar is an __init__ parameter that is no field: the signatures then differ.
    if _parameters(init) != _parameters(made.__init__):
        return made  # type: ignore[no-any-return]
    init.__annotations__ = made.__init__.__annotations__
    init.__doc__ = made.__init__.__doc__
    made.__init__ = init
    return made  # type: ignore[no-any-return]


def _slot_of(cls: type, name: str) -> Any:
    """The slot's descriptor, on the class that declared it (a base record's, inherited)."""
    return next(klass.__dict__[name] for klass in cls.__mro__ if name in klass.__dict__)


def _parameters(function: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def _slot_init(cls: Any) -> Any:
    """Source of an ``__init__`` with the dataclass's signature, setting every field's slot
    through ``<slot descriptor>.__set__``, compiled once per class."""
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        setter = f"_set_{f.name}"
        names[setter] = _slot_of(cls, f.name).__set__
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_factory:
            names[f"_make_{f.name}"] = f.default_factory
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
        if not f.init:
            if has_factory:
                body.append(f"    {setter}(self, _make_{f.name}())")
            elif f.default is not dataclasses.MISSING:
                body.append(f"    {setter}(self, _default_{f.name})")
            continue
        if has_factory:
            param = f"{f.name}=_FACTORY"
            body.append(f"    {setter}(self, _make_{f.name}() if {f.name} is _FACTORY"
                        f" else {f.name})")
        else:
            param = f.name if f.default is dataclasses.MISSING else f"{f.name}=_default_{f.name}"
            body.append(f"    {setter}(self, {f.name})")
        (keyword if f.kw_only else positional).append(param)
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({params}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, names)  # built above from the class's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init
