"""A tiny named registry: decorators to register, lookups that list the valid choices on a miss."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories or specs) for one kind of thing.

    `what` is the human name used in error messages ("vision backbone", "projector", ...), and `flag`
    optionally names the config field that selects an entry, so a bad choice says how to fix it.
    """

    def __init__(self, what: str, flag: str | None = None) -> None:
        self.what, self.flag = what, flag
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; without `obj`, return a decorator."""

        def _add(o: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            where = f" (set `{self.flag}`)" if self.flag else ""
            raise KeyError(
                f"Unknown {self.what} {name!r}{where}; choose one of: {', '.join(sorted(self._entries))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)
