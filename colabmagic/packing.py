"""Transitional: the pack package's public names, for a caller not yet moved to it."""

from .pack import PackResult, pack, parse_size

__all__ = ["PackResult", "pack", "parse_size"]
