"""Per-process memo of per-model computations, keyed by the model's exact weights.

A study judges many edits against the same references: every run's evaluation card scores the
original and the retain model on the same items. `by_weights` caches such a function's result
under (SHA-256 of the weights, the frozen arguments), so a reference is computed once per
process and every later run reuses it. A call is computed afresh (never cached) when

- the subject is a ``(model, edit)`` pair (its weights are only known once the edit is applied),
- the model has hooks registered (hook edits change outputs but not weights),
- an argument cannot be frozen into a key (a large tensor, an open file, a lambda …),
- the cache is disabled (``MECHUNLEARN_MEMO=0``, or `disabled()`).

Results are deep-copied on the way in and out, so callers may mutate what they get.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
from collections import OrderedDict
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

MAX_ENTRIES = 64
"""Entries kept per memoised function (least recently used dropped first)."""

_enabled = os.environ.get("MECHUNLEARN_MEMO", "1") != "0"
_caches: list[OrderedDict] = []


class _Unfreezable(Exception):
    pass


def freeze(value: Any) -> Any:
    """A hashable, equality-comparable stand-in for ``value`` (dataclasses, dicts, sequences,
    scalars, strings, small tensors, and models without hooks by their weights hash); raises
    `_Unfreezable` for anything else."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if type(value).__name__ == "Tensor" and type(value).__module__ == "torch" and value.numel() <= 100_000:
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.flatten().tolist()))
    from mechunlearn.models.model import Model

    if isinstance(value, Model):
        # a model argument (a reference beside the subject) is keyed by its weights, like the subject
        if value.hook_count():
            raise _Unfreezable("a model with hooks")
        return ("model", value.weights_hash())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__, *(freeze(getattr(value, f.name)) for f in dataclasses.fields(value)))
    raise _Unfreezable(type(value).__name__)


def by_weights(fn: F) -> F:
    """Memoise ``fn(model, *args, **kwargs)`` by the model's weights hash and the frozen arguments."""
    cache: OrderedDict = OrderedDict()
    _caches.append(cache)

    @functools.wraps(fn)
    def wrapper(subject, *args, **kwargs):
        from mechunlearn.models.model import Model

        if not _enabled or not isinstance(subject, Model) or subject.hook_count():
            return fn(subject, *args, **kwargs)
        try:
            key = (subject.weights_hash(), freeze(args), freeze(kwargs))
        except _Unfreezable:
            return fn(subject, *args, **kwargs)
        if key in cache:
            cache.move_to_end(key)
            return copy.deepcopy(cache[key])
        result = fn(subject, *args, **kwargs)
        cache[key] = copy.deepcopy(result)
        if len(cache) > MAX_ENTRIES:
            cache.popitem(last=False)
        return result

    wrapper.cache = cache  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def clear() -> None:
    """Empty every memo of this process."""
    for cache in _caches:
        cache.clear()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Compute everything afresh inside the block (e.g. to time a verifier)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


__all__ = ["by_weights", "clear", "disabled", "freeze"]
