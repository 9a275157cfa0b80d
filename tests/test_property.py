"""Property tests: whatever archive a stranger hands over, nothing outside the target
folder changes, and the archive is either staged in full or refused with the target
exactly as it was.

Archives are built here byte by byte (zip) or with tarfile (tar, compressed or not)
from member names drawn from hostile alphabets, links pointing in and out, device
entries, declared sizes that differ from the real ones, and truncation.  The oracle is
deliberately small: the invariant above holds for every archive; an archive with an
obviously unsafe member is refused; an archive with nothing questionable in it is
staged byte for byte.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import struct
import tarfile
import tempfile
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import colabmagic
from colabmagic.errors import ColabMagicError
from tests.builders import snapshot

EXAMPLES = 500
BOX = "\x00BOX\x00"  # stands for the absolute path of the box around the target

SAFE_PARTS = ["a", "b", "c", "data", "x.bin", "é", "日本", "sp ace", "-", "...", ".hidden"]
HOSTILE_PARTS = [
    "..",
    ".",
    "",
    "\u2025",  # two dot leader: NFKC ".."
    "\ufe30",  # vertical two dot leader: NFKC ".."
    "\uff0e\uff0e",  # fullwidth full stops: NFKC ".."
    ".\uff0e",
    "\uff0e",
    "C:",
    "c:x",
    "a\\b",
    "\\",
    "..\\x",
    "\x00",
    "x\x01",
    "\n",
    "\x7f",
    "\x85",
    "\u202e",
    "\u2028",
    ".colabmagic",
    "sentinel.txt",
    "n" * 255,
    "n" * 256,
]
BIDI_AND_LINES = set("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Compressed tars: a codec is also where truncation hides (the stream just ends).
CODECS = {"tar.gz": gzip, "tar.bz2": bz2, "tar.xz": lzma}
FORMATS = ["zip-stored", "zip-deflate", "tar", *CODECS]
KINDS = ["file", "file", "file", "dir", "symlink", "hardlink", "fifo", "chardev"]


@dataclass
class Entry:
    name: str
    kind: str
    data: bytes = b""
    target: str = ""


@dataclass
class Spec:
    fmt: str  # one of FORMATS
    entries: list[Entry]
    lies: dict[int, tuple] = field(default_factory=dict)  # zip: index -> (field, value)
    cut: float | None = None  # truncate the archive at this fraction of its length
    force: bool = False  # replace what is in the way (the user's sentinel file)


# --------------------------------------------------------------------------- strategies

safe_part = st.sampled_from(SAFE_PARTS)
any_part = st.one_of(safe_part, safe_part, st.sampled_from(HOSTILE_PARTS), st.text(max_size=6))


def names(part: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda prefix, parts, suffix: prefix + "/".join(parts) + suffix,
        st.sampled_from(["", "", "", "", "", "/", "./", "//", "C:/"]),
        st.lists(part, min_size=1, max_size=4),
        st.sampled_from(["", "", "", "/"]),
    )


plain_name = names(any_part)
safe_name = st.lists(safe_part, min_size=1, max_size=3).map("/".join)
long_name = st.one_of(
    st.integers(250, 260).map(lambda depth: "d/" * depth + "f"),  # around MAX_DEPTH
    st.sampled_from([1400, 2100]).map(lambda depth: "d/" * depth + "f"),  # past recursion
    st.sampled_from([4000, 4095, 4097]).map(lambda n: "/".join(["n" * 200] * (n // 201))),
)
data = st.one_of(st.binary(max_size=200), st.integers(0, 5000).map(lambda n: b"\0" * n))
link_target = st.one_of(
    st.sampled_from(
        [
            "../x",
            "../../x",
            "../sibling/notes.txt",
            "/etc/passwd",
            BOX + "/sibling/notes.txt",
            BOX,
            "a/../..",
            "x/../../..",
            ".",
            "",
            "a",
            "a/b",
            "./a",
            "a/../b",
            "sentinel.txt",
            "x" * 5000,
        ]
    ),
    plain_name,
)


SMALL_LIE = st.sampled_from([-3, -2, -1, 1, 2, 3])
LIES = st.one_of(
    st.tuples(st.just("usize"), SMALL_LIE),
    st.tuples(st.just("usize"), st.just(0xFFFFFFFE)),
    st.tuples(st.just("csize"), SMALL_LIE),
    st.tuples(st.just("flags"), st.sampled_from([0x1, 0x40])),  # encrypted
    st.tuples(st.just("method"), st.sampled_from([1, 9, 12, 99])),  # unsupported
)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """An archive.  Some draw their names from safe parts only and are hostile, if at
    all, in their links, kinds or sizes, so that the staged branch is exercised too."""
    fmt = draw(st.sampled_from(FORMATS))
    pool, kinds = draw(
        st.sampled_from(
            [
                (safe_name, ["file", "dir"]),
                (safe_name, ["file", "dir"]),
                (safe_name, KINDS),
                (plain_name, KINDS),
                (long_name, KINDS),
            ]
        )
    )
    entries: list[Entry] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(kinds))
        entry = Entry(draw(pool), kind, draw(data))
        if kind == "symlink":
            entry.target = draw(link_target)
        elif kind == "hardlink":
            earlier = [e.name for e in entries]
            use_earlier = earlier and draw(st.booleans())
            entry.target = draw(st.sampled_from(earlier)) if use_earlier else draw(link_target)
        entries.append(entry)
    lies: dict[int, tuple] = {}
    if fmt.startswith("zip") and draw(st.integers(0, 3)) == 0:
        lies[draw(st.integers(0, len(entries) - 1))] = draw(LIES)
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.floats(0.0, 1.0)))
    return Spec(fmt, entries, lies, cut, force=draw(st.booleans()))


@st.composite
def benign_specs(draw: st.DrawFn) -> Spec:
    """An archive with nothing questionable in it: unique safe names in one tree,
    links that stay inside."""
    fmt = draw(st.sampled_from(FORMATS))
    paths = st.lists(safe_part, min_size=1, max_size=3).map(lambda p: "t/" + "/".join(p))
    chosen = draw(st.lists(paths, max_size=8, unique=True))
    entries = []
    for name in chosen:
        # A name that is the folder of another must be a folder.
        folder = any(other.startswith(name + "/") for other in chosen)
        kind = "dir" if folder else draw(st.sampled_from(["file", "file", "symlink"]))
        entry = Entry(name, kind, draw(data))
        if kind == "symlink":
            entry.target = "../x.bin" if name.count("/") >= 2 else draw(st.sampled_from(["x", "."]))
        entries.append(entry)
    return Spec(fmt, entries)


# --------------------------------------------------------------------------- builders

_MODES = {
    "file": 0o100644,
    "hardlink": 0o100644,  # zip has no hard links: a plain file
    "dir": 0o040755,
    "symlink": 0o120777,
    "fifo": 0o010644,  # zip mode bits never make devices: a plain file
    "chardev": 0o020644,
}


def lied(real: int, delta: int) -> int:
    """REAL moved by DELTA, never negative, never REAL itself."""
    return real + delta if real + delta >= 0 else real + abs(delta)


def build_zip(spec: Spec, box: str) -> bytes:
    """A zip written field by field, so that names, sizes and flags say what we want
    (zipfile would cut names at NUL and never lie)."""
    out = io.BytesIO()
    central = []
    for i, entry in enumerate(spec.entries):
        name = entry.name + ("/" if entry.kind == "dir" and not entry.name.endswith("/") else "")
        raw = name.encode("utf-8", "surrogatepass")
        body = entry.target.replace(BOX, box).encode() if entry.kind == "symlink" else entry.data
        if entry.kind == "dir":
            body = b""
        method = 8 if spec.fmt == "zip-deflate" else 0
        packed = body
        if method == 8:
            deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            packed = deflate.compress(body) + deflate.flush()
        crc, csize, usize, flags = zlib.crc32(body), len(packed), len(body), 0x800
        lie, value = spec.lies.get(i, (None, None))
        if lie == "usize":
            usize = value if value > 3 else lied(usize, value)
        elif lie == "csize":
            csize = lied(csize, value)
        elif lie == "flags":
            flags |= value
        elif lie == "method":
            method = value
        offset = out.tell()
        local = (20, flags, method, 0, 0x21, crc, csize, usize, len(raw), 0)
        out.write(struct.pack("<4s5HL2L2H", b"PK\x03\x04", *local) + raw + packed)
        mode = _MODES[entry.kind] << 16
        made = (20, 3, 20, 0, flags, method, 0, 0x21, crc, csize, usize, len(raw), 0, 0, 0, 0)
        central.append(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", *made, mode, offset) + raw)
    cd_start = out.tell()
    cd = b"".join(central)
    out.write(cd)
    n = len(central)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(cd), cd_start, 0))
    return out.getvalue()


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
}


def build_tar(spec: Spec, box: str, tar_format: int) -> bytes | None:
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tar_format) as archive:
            for entry in spec.entries:
                info = tarfile.TarInfo(entry.name)
                info.type = _TAR_TYPES[entry.kind]
                info.mode = 0o755 if entry.kind == "dir" else 0o644
                info.linkname = entry.target.replace(BOX, box)
                body = entry.data if entry.kind == "file" else b""
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
    except (ValueError, UnicodeError):
        return None  # a name tarfile itself will not write
    raw = out.getvalue()
    return CODECS[spec.fmt].compress(raw) if spec.fmt in CODECS else raw


def as_stored(spec: Spec, archive: bytes) -> list[Entry]:
    """The members as a reader sees them.  tarfile writes some names differently from
    what it was given (it cuts them at NUL), so tar members are read back."""
    if spec.fmt.startswith("zip"):
        # A zip name that ends in "/" is a folder, whatever its mode says.
        return [Entry(e.name, "dir", b"", "") if e.name.endswith("/") else e for e in spec.entries]
    if spec.fmt in CODECS:
        archive = CODECS[spec.fmt].decompress(archive)
    stored = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as reader:
        for info, entry in zip(reader.getmembers(), spec.entries, strict=True):
            stored.append(Entry(info.name, entry.kind, entry.data, info.linkname))
    return stored


# --------------------------------------------------------------------------- oracle


def parts_of(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def unsafe_name(raw: str) -> bool:
    """Members DESIGN §3 says are refused, whatever else the archive holds."""
    if raw == "" or raw.startswith("/") or "\\" in raw or ".." in raw.split("/"):
        return True
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in BIDI_AND_LINES for c in raw):
        return True
    if len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha():
        return True
    if any(unicodedata.normalize("NFKC", p) in (".", "..") for p in parts_of(raw)):
        return True
    encoded = os.fsencode(raw)
    if len(encoded) > 4096 or any(len(os.fsencode(p)) > 255 for p in parts_of(raw)):
        return True
    return len(parts_of(raw)) > 256


def escapes(link: str, target: str) -> bool:
    if target == "" or target.startswith("/") or "\\" in target or "\x00" in target:
        return True
    depth = 0
    for p in link.split("/")[:-1] + target.split("/"):
        if p in ("", "."):
            continue
        depth += -1 if p == ".." else 1
        if depth < 0:
            return True
    return False


def verdict(spec: Spec, entries: list[Entry]) -> str:
    """'refuse' when some member must be refused, 'stage' when nothing in the archive is
    questionable, else 'either' (the invariant alone decides)."""
    for i, (lie, _) in spec.lies.items():
        # A folder's data is skipped (a gap after it is allowed, as data descriptors
        # make), so a wrong size on it may change nothing.
        if lie in ("flags", "method") or entries[i].kind != "dir":
            return "refuse"
    zip_fmt = spec.fmt.startswith("zip")
    files: dict[str, Entry] = {}
    dirs: set[str] = set()
    unsure = spec.cut is not None or bool(spec.lies)
    for entry in entries:
        raw = entry.name + ("/" if zip_fmt and entry.kind == "dir" else "")
        if unsafe_name(raw) or (not zip_fmt and entry.kind in ("fifo", "chardev")):
            return "refuse"
        clean = "/".join(parts_of(raw))
        if len(clean) > 3500:
            unsure = True  # refused or not by PATH_MAX, depending on where tmp is
        if not clean:
            if entry.kind == "dir":
                continue
            return "refuse"
        top = clean.split("/")[0]
        if top == ".colabmagic" or (top == "sentinel.txt" and not spec.force):
            return "refuse"
        parents = ["/".join(clean.split("/")[:i]) for i in range(1, clean.count("/") + 1)]
        if any(p in files for p in parents):
            return "refuse"
        dirs.update(parents)
        if entry.kind == "dir":
            if clean in files:
                return "refuse"
            dirs.add(clean)
            continue
        if clean in dirs or clean in files:
            return "refuse"
        if entry.kind == "symlink" and escapes(clean, entry.target):
            return "refuse"
        if entry.kind == "symlink" and len(entry.target.encode("utf-8", "surrogateescape")) > 4000:
            return "refuse"
        if entry.kind == "hardlink" and not zip_fmt:
            target = "/".join(parts_of(entry.target))
            if getattr(files.get(target), "kind", None) != "file" or unsafe_name(entry.target):
                return "refuse"
        files[clean] = entry
    for entry in files.values():
        if entry.kind == "symlink":
            # A target that passes through another link (itself included: a/a -> a)
            # resolves where the kernel says, not where the text says: no verdict.
            path = parts_of(entry.name)[:-1] + parts_of(entry.target)
            through = ["/".join(path[:i]) for i in range(1, len(path))]
            last = files.get("/".join(path))
            if (
                any(p in files for p in through)
                or ".." in path
                or getattr(last, "kind", "") == "symlink"
            ):
                unsure = True
    return "either" if unsure else "stage"


# --------------------------------------------------------------------------- checks


def check_staged(target: Path, entries: list[Entry], zip_fmt: bool, box: str) -> None:
    for entry in entries:
        clean = "/".join(parts_of(entry.name))
        path = target / clean
        if entry.kind == "dir":
            assert path.is_dir() and not path.is_symlink(), clean
        elif entry.kind == "symlink":
            target_text = entry.target.replace(BOX, box) if zip_fmt else entry.target
            assert os.readlink(path) == target_text, clean
        elif entry.kind == "hardlink" and not zip_fmt:
            original = target / "/".join(parts_of(entry.target))
            assert os.path.samefile(path, original), clean
        else:
            assert path.is_file() and not path.is_symlink(), clean
            assert path.read_bytes() == entry.data, clean
            assert stat.S_IMODE(path.stat().st_mode) & 0o600 == 0o600


def stage_and_check(spec: Spec, tar_format: int = tarfile.PAX_FORMAT) -> str:
    with tempfile.TemporaryDirectory(prefix="colabmagic-prop-") as tmp:
        root = Path(tmp)
        box = root / "box"
        target = box / "target"
        (box / "sibling").mkdir(parents=True)
        target.mkdir()
        (box / "sibling" / "notes.txt").write_bytes(b"next door")
        (target / "sentinel.txt").write_bytes(b"the user's own work")
        if spec.fmt.startswith("zip"):
            archive = build_zip(spec, str(box))
        else:
            archive = build_tar(spec, str(box), tar_format)
            if archive is None:
                event("tarfile would not write it")
                return "skipped"
        entries = as_stored(spec, archive)
        if spec.cut is not None:
            archive = archive[: int(len(archive) * spec.cut)]
        source = root / "drive" / ("a.zip" if spec.fmt.startswith("zip") else "a." + spec.fmt)
        source.parent.mkdir()
        source.write_bytes(archive)
        outside = snapshot(root, skip=target)
        inside = snapshot(target)
        expected = verdict(spec, entries)
        note(f"verdict {expected}; stored names {[e.name for e in entries]!r}")
        try:
            result = colabmagic.stage(source, target, quiet=True, force=spec.force)
        except ColabMagicError as error:
            message = str(error)
            note(f"refused: {message}")
            assert "\n" not in message and "\r" not in message
            assert expected != "stage", f"a benign archive was refused: {message}"
            outcome = "refused"
        else:
            assert expected != "refuse", "an unsafe archive was staged"
            outcome = "staged"
        assert snapshot(root, skip=target) == outside, "something outside the target changed"
        state = target / ".colabmagic"
        assert [n for n in os.listdir(state) if n.startswith(("tmp-", "trash-"))] == []
        if outcome == "refused":
            assert snapshot(target, skip=state) == snapshot_without(inside, b".colabmagic")
        else:
            if not any(parts_of(e.name)[:1] == ["sentinel.txt"] for e in entries):
                assert (target / "sentinel.txt").read_bytes() == b"the user's own work"
            check_staged(target, entries, spec.fmt.startswith("zip"), str(box))
            assert result.action == "staged"
        event(f"{spec.fmt}: {outcome}")
        return outcome


def snapshot_without(found: dict[str, tuple], top: bytes) -> dict[str, tuple]:
    return {k: v for k, v in found.items() if k != top and not k.startswith(top + b"/")}


# --------------------------------------------------------------------------- properties

_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(spec=specs(), tar_format=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
def test_hostile_archives_are_staged_whole_or_refused_cleanly(spec: Spec, tar_format: int):
    stage_and_check(spec, tar_format)


@settings(_SETTINGS, max_examples=100)
@given(spec=benign_specs())
def test_benign_archives_are_staged_byte_for_byte(spec: Spec):
    assert stage_and_check(spec) == "staged"
