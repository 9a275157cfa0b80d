"""Progress bars in bytes, with files in the postfix; a no-op when quiet."""

from __future__ import annotations

from typing import Any


class _Silent:
    """Stands in for tqdm when the user asked for quiet, without importing it."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar(total: int | None, desc: str, *, quiet: bool = False) -> Any:
    """A tqdm.auto bar counting bytes (a widget in notebooks, text in terminals)."""
    if quiet:
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        dynamic_ncols=True,
        leave=False,
    )
