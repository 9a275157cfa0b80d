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


def _tqdm() -> Any:
    """tqdm.auto's class, but the text bar without a warning where ipywidgets is missing.

    In a Jupyter kernel without ipywidgets, tqdm.auto prints "TqdmWarning: IProgress
    not found" and falls back to text; ask first, and fall back silently.
    """
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


def bar(total: int | None, desc: str, *, quiet: bool = False) -> Any:
    """A tqdm bar counting bytes (a widget in notebooks with ipywidgets, else text)."""
    if quiet:
        return _Silent()
    tqdm = _tqdm()
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        dynamic_ncols=True,
        leave=False,
    )
