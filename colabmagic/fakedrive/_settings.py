"""Profiles, settings and unit parsing for the simulated Drive.

Pure data and validation, shared by the client (which checks arguments before it
starts or reconfigures a server) and the server (which applies them). No FUSE here.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import re
from dataclasses import dataclass
from typing import Any

# The extended attribute that carries control messages. Reading it on any path of a
# fake Drive returns the server's state; writing it applies a command. It exists
# only in the server's head, never in SRC, so the mounted tree shows nothing new.
CONTROL_XATTR = "user.colabmagic.fakedrive"


@dataclass(frozen=True)
class Profile:
    """How slow one kind of Drive is.

    Times in seconds; ``list_latency`` per 1,000 entries listed; ``bandwidth`` in
    bytes/s shared by all reads and writes (``math.inf``: no cap); ``inflight`` is the
    number of opens, reads and writes served at once (0: no cap); ``per_stream`` in
    bytes/s for each open file handle on its own, within the shared ``bandwidth``
    (``math.inf``: no such cap, so one stream can take the whole link).
    """

    open_latency: float
    warm_latency: float
    list_latency: float
    bandwidth: float
    inflight: int
    per_stream: float = math.inf

    def __str__(self) -> str:
        """In words: "20 ms a cold open, 1 ms warm, 50 ms per 1,000 listed, ..."."""
        rate = "no bandwidth cap" if math.isinf(self.bandwidth) else _rate(self.bandwidth)
        if not math.isinf(self.per_stream):
            rate += f" ({_rate(self.per_stream)} per stream)"
        inflight = f"{self.inflight} in flight" if self.inflight else "no cap in flight"
        return (
            f"{_ms(self.open_latency)} a cold open, {_ms(self.warm_latency)} warm, "
            f"{_ms(self.list_latency)} per 1,000 listed, {rate}, {inflight}"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def _rate(bandwidth: float) -> str:
    if bandwidth >= 1e9:
        return f"{bandwidth / 1e9:g} GB/s"
    return f"{bandwidth / 1e6:g} MB/s"


PROFILES: dict[str, Profile] = {
    # Measured on Colab (DESIGN.md section 1): a cold open costs 0.3-0.7 s.
    "colab": Profile(0.5, 0.005, 0.75, 50e6, 16),
    # Slow enough that Drive's shape shows in benchmarks, fast enough to repeat runs.
    "bench": Profile(0.020, 0.001, 0.050, 100e6, 16),
    # One stream slower than the link, as public figures suggest for Drive (a `cp` from
    # the mount at ~65 MB/s where a download reached 130 MB/s): ranged readers pay.
    "multistream": Profile(0.020, 0.001, 0.050, 100e6, 16, per_stream=25e6),
    # For tests: every effect is there, none costs real time.
    "fast": Profile(0.002, 0.0, 0.002, 2e9, 64),
    # A plain pass-through.
    "none": Profile(0.0, 0.0, 0.0, math.inf, 0),
}

PERF_KEYS = tuple(f.name for f in dataclasses.fields(Profile))
FAULT_KEYS = ("fail_after", "fail_errno", "fail_path", "fail_always", "fail_rate", "seed")
FAULT_DEFAULTS: dict[str, Any] = {
    "fail_after": None,
    "fail_errno": "EIO",
    "fail_path": None,
    "fail_always": False,
    "fail_rate": 0.0,
    "seed": None,
}


@dataclass(frozen=True)
class Settings:
    """Everything a running server obeys: a profile's numbers and the faults."""

    profile: str
    open_latency: float
    warm_latency: float
    list_latency: float
    bandwidth: float
    inflight: int
    per_stream: float = math.inf
    fail_after: int | None = None
    fail_errno: str = "EIO"
    fail_path: str | None = None
    fail_always: bool = False
    fail_rate: float = 0.0
    seed: int | None = None

    @property
    def errno_value(self) -> int:
        return getattr(errno, self.fail_errno)

    @property
    def shaped(self) -> bool:
        """True when any delay or cap applies (False: a bare pass-through)."""
        return bool(
            self.open_latency
            or self.warm_latency
            or self.inflight
            or self.bandwidth != math.inf
            or self.per_stream != math.inf
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_changes(base: Settings | None, changes: dict[str, Any]) -> Settings:
    """Return ``base`` with ``changes`` applied, validated.

    ``profile`` switches every latency/bandwidth number to that profile's. A ``None``
    latency/bandwidth value means "the profile's"; a ``None`` fault value means "off".
    Raises TypeError for an unknown name and ValueError for a bad value.
    """
    unknown = sorted(set(changes) - {"profile", *PERF_KEYS, *FAULT_KEYS})
    if unknown:
        raise TypeError(f"unexpected setting {unknown[0]!r}")
    name = changes.get("profile")
    if name is None:
        name = base.profile if base is not None else "bench"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
    values = base.to_dict() if base is not None else {"profile": name, **FAULT_DEFAULTS}
    if "profile" in changes or base is None:
        values.update(dataclasses.asdict(PROFILES[name]), profile=name)
    for key, value in changes.items():
        if key in PERF_KEYS:
            values[key] = getattr(PROFILES[name], key) if value is None else value
        elif key in FAULT_KEYS:
            values[key] = FAULT_DEFAULTS[key] if value is None else value
    return _validated(values)


def _validated(v: dict[str, Any]) -> Settings:
    for key in ("open_latency", "warm_latency", "list_latency"):
        v[key] = _number(key, v[key])
        if not math.isfinite(v[key]) or v[key] < 0:
            raise ValueError(f"{key} must be a finite number of seconds >= 0, not {v[key]!r}")
    v["bandwidth"] = _number("bandwidth", v["bandwidth"])
    if not v["bandwidth"] > 0:
        raise ValueError(
            f"bandwidth must be > 0 bytes/s (math.inf: no cap), not {v['bandwidth']!r}"
        )
    v["per_stream"] = _number("per_stream", v["per_stream"])
    if not v["per_stream"] > 0:
        raise ValueError(
            f"per_stream must be > 0 bytes/s (math.inf: no cap), not {v['per_stream']!r}"
        )
    v["inflight"] = _integer("inflight", v["inflight"])
    if v["inflight"] < 0:
        raise ValueError(f"inflight must be >= 0 (0: no cap), not {v['inflight']!r}")
    if v["fail_after"] is not None:
        v["fail_after"] = _integer("fail_after", v["fail_after"])
        if v["fail_after"] < 0:
            raise ValueError(f"fail_after must be a byte offset >= 0, not {v['fail_after']!r}")
    v["fail_errno"] = _errno_name(v["fail_errno"])
    if v["fail_path"] is not None:
        v["fail_path"] = _relative_path(v["fail_path"])
    v["fail_always"] = bool(v["fail_always"])
    v["fail_rate"] = _number("fail_rate", v["fail_rate"])
    if not 0.0 <= v["fail_rate"] <= 1.0:
        raise ValueError(f"fail_rate must be a probability in [0, 1], not {v['fail_rate']!r}")
    if v["seed"] is not None:
        v["seed"] = _integer("seed", v["seed"])
    return Settings(**v)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return float(value)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value


def _errno_name(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value in errno.errorcode:
        return errno.errorcode[value]
    if isinstance(value, str) and value.upper() in errno.__dict__ and value.upper().startswith("E"):
        return value.upper()
    raise ValueError(f"fail_errno must be an errno name such as 'EIO' or 'ENOTCONN', not {value!r}")


def _relative_path(value: Any) -> str:
    # The server sees paths as "/a/b" relative to SRC; store the fault path that way.
    text = str(value).replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"fail_path must be a path relative to SRC without '..', not {value!r}")
    return "/" + "/".join(parts)


# --- units for the CLI ---------------------------------------------------------------

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*(us|µs|ms|s|sec|min)?\s*$", re.IGNORECASE)
_DURATION_SCALE = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0}
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(text: str) -> float:
    """Seconds from ``"500ms"``, ``"0.5s"`` or ``"0.5"``."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (try 500ms, 0.5s or 0.5)")
    unit = m.group(2).lower() if m.group(2) else None
    return float(m.group(1)) * _DURATION_SCALE[unit]


def parse_size(text: str) -> float:
    """Bytes from ``"100000"``, ``"1e6"``, ``"50MB"`` (10^6) or ``"64KiB"`` (2^10)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (try 100000, 1e6, 50MB or 64KiB)")
    base = 1024 if m.group(3) else 1000
    return float(m.group(1)) * base ** _SIZE_POWER[m.group(2).lower()]


def parse_bandwidth(text: str) -> float:
    """Bytes/s from ``"50MB/s"``, ``"50e6"``, ``"1GB/s"`` or ``"inf"`` (no cap)."""
    stripped = text.strip()
    if stripped.lower() in ("inf", "unlimited", "none"):
        return math.inf
    for suffix in ("/s", "ps"):
        if stripped.lower().endswith(suffix):
            stripped = stripped[: -len(suffix)]
            break
    try:
        return parse_size(stripped)
    except ValueError:
        raise ValueError(f"not a bandwidth: {text!r} (try 50MB/s, 50e6, 1GB/s or inf)") from None
