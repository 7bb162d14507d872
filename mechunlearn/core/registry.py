"""Name → object registries (one per kind: models, localizers, edits, losses, verifiers).

>>> LOSSES = Registry("loss")
>>> @LOSSES.register("ga")
... class GradientAscent: ...
>>> LOSSES.get("ga")
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects that refuses duplicates and explains unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name``; a second registration raises."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``."""
        if name in self._items:
            raise KeyError(f"a {self.kind} named {name!r} is already registered ({self._items[name]!r})")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names list the known ones."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def from_dict(registry: Registry[Any], spec: dict[str, Any]) -> Any:
    """Build an object from ``{"name": ..., **config}`` through a registry of config classes."""
    if "name" not in spec:
        raise KeyError(f"a {registry.kind} spec needs a 'name' key, got keys {sorted(spec)}")
    fields = {k: v for k, v in spec.items() if k != "name"}
    return registry.get(spec["name"])(**fields)
