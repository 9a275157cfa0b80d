"""Member names and the Plan: what an archive may contain, judged before it is written.

Every member name is checked (`clean_name`), and the set of members as a whole
(`Plan`: duplicates, file-vs-folder clashes, links that leave the tree).  One
refused member refuses the whole archive: `Refused` says which and why.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field

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


@dataclass
class Plan:
    """The members of one archive, checked as a whole as they are added."""

    files: dict[str, Member] = field(default_factory=dict)  # files and links
    dirs: set[str] = field(default_factory=set)
    declared: int = 0
    top: dict[str, None] = field(default_factory=dict)  # top-level names, in order

    def add(self, member: Member) -> None:
        name = member.name
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.files:
                raise Refused(f"member {shown(name)} is inside {shown(parent)}, which is a file")
            self.dirs.add(parent)
        if member.kind == "dir":
            if name in self.files:
                raise Refused(f"member {shown(name)} is both a file and a folder")
            self.dirs.add(name)
        else:
            if name in self.dirs:
                raise Refused(f"member {shown(name)} is both a file and a folder")
            if name in self.files:
                raise Refused(f"member {shown(name)} appears twice")
            if member.kind == "symlink" and member.target is not None:
                check_symlink(name, member.target)
            elif (
                member.kind == "hardlink"
                and getattr(self.files.get(member.target or ""), "kind", None) != "file"
            ):
                raise Refused(
                    f"member {shown(name)} is a hard link to {shown(member.target)}, "
                    "which is not an earlier file of the archive"
                )
            self.files[name] = member
            self.declared += member.size
        self.top.setdefault(parts[0], None)


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
