"""Choice-valued settings are checked where they enter, before any data is read.

An unknown index kind, objective or sampler used to surface only where the value was first used,
which for a training job can be after the corpus was encoded or the model trained. Constructors,
dataclass `__post_init__`s and the first lines of each job therefore call `check_choice`, and the
error names the parameter, the value and every allowed value.
"""
from __future__ import annotations

from typing import Any, Iterable

from irjax.errors import UserError


class InvalidChoiceError(ValueError, UserError):
    """A setting that must be one of a fixed set of values is not; the message lists them."""


def check_choice(parameter: str, value: Any, allowed: Iterable[Any]) -> Any:
    """`value` unchanged if it is one of `allowed`, else InvalidChoiceError naming `parameter`."""
    options = list(allowed)
    try:
        ok = value in options
    except TypeError:  # an unhashable or incomparable value is not a choice either
        ok = False
    if not ok:
        raise InvalidChoiceError(f"{parameter}={value!r} is not a valid choice; choose one of "
                                 f"{options}")
    return value


def check_choices(owner: str, **settings: tuple[Any, Iterable[Any]]) -> None:
    """`check_choice(f"{owner}.{name}", value, allowed)` for each `name=(value, allowed)`."""
    for name, (value, allowed) in settings.items():
        check_choice(f"{owner}.{name}", value, allowed)
