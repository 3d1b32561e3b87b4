"""Does a configured value fit a parameter's type hint? For checking bindings before a run starts.

A wrongly typed setting used to fail deep inside the run, e.g. `BM25Retriever.k1 = 'high'` as
"'<' not supported between instances of 'str' and 'int'", naming no parameter. gin_config.py
compares every bound value with the configurable's type hints after parsing and names the
`configurable.parameter`, the expected type and the value.

The answer is three-valued, because not every hint can be checked from a literal: True (fits),
False (cannot fit), None (cannot tell; treated as fitting). Checked: builtin scalars (bool is not
accepted for int or float, an int is accepted for float), None, Optional/Union, Literal, tuple
(fixed or `...`), list/Sequence/Iterable (a str is not accepted where a sequence of values is
expected), dict/Mapping, Callable, Any. Other classes are only checked against `InstanceOf`
(what a `@Configurable()` reference will produce); a literal given for, say, a Path is left to
the code, which may well convert it.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import sys
import types
import typing
from typing import Any, Callable, Literal, Union

Verdict = typing.Optional[bool]


@dataclasses.dataclass(frozen=True)
class InstanceOf:
    """Stands for a value not built yet: an instance of `cls` (e.g. from `@BM25Retriever()`)."""

    cls: type


UNKNOWN = object()  # stands for a value whose type cannot be known before running

_SEQUENCES = (list, collections.abc.Sequence, collections.abc.Iterable,
              collections.abc.Collection, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _all(verdicts: typing.Iterable[Verdict]) -> Verdict:
    result: Verdict = True
    for verdict in verdicts:
        if verdict is False:
            return False
        if verdict is None:
            result = None
    return result


def _any(verdicts: typing.Iterable[Verdict]) -> Verdict:
    result: Verdict = False
    for verdict in verdicts:
        if verdict is True:
            return True
        if verdict is None:
            result = None
    return result


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


def _scalar(value: Any, hint: type) -> Verdict:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def fits(value: Any, hint: Any) -> Verdict:
    """Whether `value` (possibly an InstanceOf or UNKNOWN placeholder) fits `hint`."""
    if value is UNKNOWN or hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return True if value is not UNKNOWN else None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return _any(fits(value, arm) for arm in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if isinstance(value, InstanceOf):
        target = origin or hint
        if not isinstance(target, type) or _is_protocol(target):
            return None
        return True if issubclass(value.cls, target) else False
    if hint in (bool, int, float, str, bytes):
        return _scalar(value, hint)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return _all(fits(item, args[0]) for item in value)
        return len(value) == len(args) and _all(fits(v, a) for v, a in zip(value, args))
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False if isinstance(value, (str, int, float, bool, dict)) or value is None \
                else None
        return _all(fits(item, args[0]) for item in value) if args else True
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if not isinstance(value, collections.abc.Mapping):
            return False if isinstance(value, (str, int, float, bool, list, tuple)) or \
                value is None else None
        if len(args) != 2:
            return True
        return _all([*(fits(k, args[0]) for k in value), *(fits(v, args[1]) for v in value.values())])
    if origin is collections.abc.Callable or hint is collections.abc.Callable or hint is Callable:
        return callable(value)
    return None  # another class: a literal may be converted by the code (see module docstring)


def describe(hint: Any) -> str:
    """A readable name for a hint: `float`, `str | None`, `tuple[int, int]`."""
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _annotations(fn_or_cls: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw annotations of the function or constructor, the namespace to resolve them in)."""
    target = fn_or_cls.__init__ if inspect.isclass(fn_or_cls) else fn_or_cls
    raw = dict(getattr(target, "__annotations__", {}))
    if dataclasses.is_dataclass(fn_or_cls):
        raw.update({f.name: f.type for f in dataclasses.fields(fn_or_cls)})
    if inspect.isclass(fn_or_cls):
        module = sys.modules.get(fn_or_cls.__module__)
        namespace = dict(vars(module)) if module else {}
    else:
        namespace = dict(getattr(inspect.unwrap(target), "__globals__", {}))
    return raw, namespace


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """The annotation as an object (postponed annotations are strings); UNKNOWN if it fails."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # noqa: S307 - what typing.get_type_hints does too
    except Exception:  # noqa: BLE001 - a name imported only for type checkers, say
        return UNKNOWN


def parameter_hints(fn_or_cls: Callable[..., Any]) -> dict[str, Any]:
    """{parameter: type hint} of a function or a class's constructor; hints that cannot be
    resolved (names imported only for type checkers, say) are left out rather than guessed."""
    try:
        names = set(inspect.signature(fn_or_cls).parameters)
    except (TypeError, ValueError):
        return {}
    raw, namespace = _annotations(fn_or_cls)
    resolved = {name: _resolve(hint, namespace) for name, hint in raw.items() if name in names}
    return {name: hint for name, hint in resolved.items() if hint is not UNKNOWN}


def return_hint(fn: Callable[..., Any]) -> Any:
    """The resolved return annotation of a function (None when absent or unresolvable)."""
    if inspect.isclass(fn):
        return fn
    raw, namespace = _annotations(fn)
    hint = _resolve(raw.get("return"), namespace) if "return" in raw else None
    return None if hint is UNKNOWN else hint
