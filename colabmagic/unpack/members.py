"""Member names and the Plan: what an archive may contain, judged before it is written.

Every member name is checked (`clean_name`), and the set of members as a whole
(`Plan`: duplicates, file-vs-folder clashes, links that leave the tree).  One
refused member refuses the whole archive: `Refused` says which and why.
"""

from __future__ import annotations

import os
import re
import unicodedata
from array import array
from dataclasses import dataclass

from ..errors import ColabMagicError

MAX_NAME_BYTES = 4096  # PATH_MAX: longer names are a bomb, not a dataset
MAX_COMPONENT_BYTES = 255  # NAME_MAX on ext4 and DriveFS
# Deeper trees break Python's own recursive os.makedirs and shutil.rmtree (1,000
# frames), and so the user's cleanup; no dataset is this deep.
MAX_DEPTH = 256
MAX_LINK_TARGET = 4096  # PATH_MAX: symlink() refuses longer targets
PATH_MAX = 4096


class Refused(ColabMagicError):
    """An archive that colabmagic will not unpack; nothing of it was put in place."""


def shown(name: str, limit: int = 80) -> str:
    """NAME as a quoted, escaped, bounded string for a one-line message."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


@dataclass
class Member:
    name: str  # normalised: relative, "/"-separated, no "." or ".." parts
    kind: str  # "file", "dir", "symlink" or "hardlink"
    size: int = 0  # declared bytes of a file
    # Link target (symlink: as stored; hardlink: normalised member name).  None for a
    # zip symlink until its data, which holds the target, has arrived.
    target: str | None = ""
    mode: int = 0o644


def clean_name(raw: str, *, is_dir: bool = False) -> str | None:
    """RAW as a safe relative name, None for the archive's own "." entry, or Refused."""
    why = _name_problem(raw)
    if why:
        raise Refused(f"member {shown(raw)} {why}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts:
        if is_dir:
            return None  # "./": the target folder itself; creating it changes nothing
        raise Refused(f"member {shown(raw)} has an empty name")
    if len(parts) > MAX_DEPTH:
        raise Refused(f"member {shown(raw)} is more than {MAX_DEPTH} folders deep")
    for part in parts:
        if unicodedata.normalize("NFKC", part) in (".", ".."):
            raise Refused(f"member {shown(raw)} has a part that reads as {part!r}")
        if len(os.fsencode(part)) > MAX_COMPONENT_BYTES:
            raise Refused(f"member {shown(raw)} has a part longer than 255 bytes")
    return "/".join(parts)


def _name_problem(raw: str) -> str | None:
    if raw == "":
        return "has an empty name"
    if "\x00" in raw:
        return "has a NUL character in its name"
    if _CONTROL.search(raw):
        return "has a control character in its name"
    if "\\" in raw:
        return "has a backslash in its name"
    if len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha():
        return "starts with a drive letter"
    if raw.startswith("/"):
        return "is an absolute path"
    if ".." in raw.split("/"):
        return 'has a ".." segment'
    if len(os.fsencode(raw)) > MAX_NAME_BYTES:
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


# C0 and C1 controls, line separators and bidi overrides: they break one-line messages
# and terminals, and make one name display as another.  One compiled class: a name is
# checked in C, not a character at a time in Python (10,000 members per archive).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _inside(link_name: str, target: str) -> bool:
    """Whether TARGET, read from the folder holding LINK_NAME, stays in the tree."""
    depth = 0
    for part in link_name.split("/")[:-1] + target.split("/"):
        if part in ("", "."):
            continue
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return False
    return True


# Kinds of a `NameTable` entry, one byte each.
DIR, FILE, SYMLINK, HARDLINK = range(4)
_KIND = {"dir": DIR, "file": FILE, "symlink": SYMLINK, "hardlink": HARDLINK}
_EMPTY = 0xFFFFFFFF  # a free slot of the hash table
_hash = hash  # str's own (SipHash) hash; a test swaps in one that collides


def encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")  # any str, back as it was


class NameTable:
    """A set of names, each numbered in the order added, in a few flat arrays.

    An archive of a million members must be vetted whole before it is written, but
    not as a million Python objects (a Member and its dict slot: about 130 bytes): a
    name costs its UTF-8 bytes in one blob, plus 21 to 29 bytes (its end in the blob,
    its hash, one byte of kind, and two to four hash-table slots).  Equal hashes are
    told apart by the names' bytes, so two names that collide are two names.
    """

    def __init__(self) -> None:
        self.blob = bytearray()
        self.ends = array("I")  # end of each name in blob (its start: the end before)
        self.hashes = array("q")
        self.kinds = array("B")
        self._slots = array("I", [_EMPTY]) * 1024  # member numbers, open addressing

    def __len__(self) -> int:
        return len(self.ends)

    def name_bytes(self, i: int) -> bytes:
        return bytes(self.blob[self.ends[i - 1] if i else 0 : self.ends[i]])

    def name(self, i: int) -> str:
        return self.name_bytes(i).decode("utf-8", "surrogatepass")

    def find(self, name: str) -> int:
        """The number of NAME, or -1."""
        return self._probe(name, _hash(name), None)[0]

    def add(self, name: str, kind: int) -> int:
        """Add NAME (not yet in the table) as KIND; its number."""
        key = encode(name)
        h = _hash(name)
        found, slot = self._probe(name, h, key)
        assert found < 0, name
        number = len(self.ends)
        self.blob += key
        try:
            self.ends.append(len(self.blob))
        except OverflowError:  # names past 4 GiB: 64-bit ends from now on
            self.ends = array("Q", self.ends)
            self.ends.append(len(self.blob))
        self.hashes.append(h)
        self.kinds.append(kind)
        self._slots[slot] = number
        if 2 * len(self.ends) > len(self._slots):  # at most half full: short probes
            self._grow()
        return number

    def _probe(self, name: str, h: int, key: bytes | None) -> tuple[int, int]:
        """(number of NAME or -1, the slot where it is or would go)."""
        slots, hashes = self._slots, self.hashes
        mask = len(slots) - 1
        at = h & mask
        while True:
            i = slots[at]
            if i == _EMPTY:
                return -1, at
            if hashes[i] == h:
                if key is None:
                    key = encode(name)
                if self.name_bytes(i) == key:
                    return i, at
            at = (at + 1) & mask

    def _grow(self) -> None:
        slots = array("I", [_EMPTY]) * (2 * len(self._slots))
        mask = len(slots) - 1
        for i, h in enumerate(self.hashes):
            at = h & mask
            while slots[at] != _EMPTY:
                at = (at + 1) & mask
            slots[at] = i
        self._slots = slots


class Plan:
    """The members of one archive (or of a glob's archives), checked as a whole as
    they are added: every name, file or folder, in one `NameTable`."""

    def __init__(self) -> None:
        self.names = NameTable()
        self.declared = 0
        self.top: dict[str, None] = {}  # top-level names, in order
        self._parent = ""  # the last folder whose ancestors were all checked

    def __len__(self) -> int:
        """Names in the plan: members, and the folders they imply."""
        return len(self.names)

    def kind(self, name: str) -> int | None:
        i = self.names.find(name)
        return None if i < 0 else self.names.kinds[i]

    def add(self, member: Member) -> None:
        names = self.names
        name = member.name
        parent, _, _ = name.rpartition("/")
        if parent and parent != self._parent:
            parts = parent.split("/")
            for i in range(1, len(parts) + 1):
                above = "/".join(parts[:i])
                found = names.find(above)
                if found < 0:
                    names.add(above, DIR)
                elif names.kinds[found] != DIR:
                    raise Refused(f"member {shown(name)} is inside {shown(above)}, which is a file")
            self._parent = parent
        found = names.find(name)
        if member.kind == "dir":
            if found >= 0 and names.kinds[found] != DIR:
                raise Refused(f"member {shown(name)} is both a file and a folder")
            if found < 0:
                names.add(name, DIR)
        else:
            if found >= 0:
                if names.kinds[found] == DIR:
                    raise Refused(f"member {shown(name)} is both a file and a folder")
                raise Refused(f"member {shown(name)} appears twice")
            if member.kind == "symlink" and member.target is not None:
                check_symlink(name, member.target)
            elif member.kind == "hardlink" and self.kind(member.target or "") != FILE:
                raise Refused(
                    f"member {shown(name)} is a hard link to {shown(member.target)}, "
                    "which is not an earlier file of the archive"
                )
            names.add(name, _KIND[member.kind])
            self.declared += member.size
        top = name.partition("/")[0]
        if top not in self.top:
            self.top[top] = None


def check_symlink(name: str, target: str) -> None:
    if not target:
        raise Refused(f"member {shown(name)} is a link with an empty target")
    if target.startswith("/"):
        raise Refused(f"member {shown(name)} links to {shown(target)}, an absolute path")
    if "\x00" in target or "\\" in target:
        raise Refused(f"member {shown(name)} links to {shown(target)}, with a NUL or backslash")
    if len(os.fsencode(target)) >= MAX_LINK_TARGET:
        raise Refused(f"member {shown(name)} is a link with an oversized target")
    if not _inside(name, target):
        raise Refused(f"member {shown(name)} links to {shown(target)}, outside the target folder")
