"""Unpacking archives from strangers: nothing here trusts a header.

- `members`: member names and the `Plan` (what may be written), `Refused`;
- `stream`: the archive's bytes as they arrive, decompression, the ratio caps;
- `zip`, `tar`: the two readers (a zip is vetted whole from its index first, a tar
  member by member as it arrives), each with its member loop;
- `writer`: the `Writer`, which writes members under a work folder and nowhere else.

`colabmagic.staging` runs them; see it for how the work folder is moved into place.
"""

from __future__ import annotations

from .members import Member, Plan, Refused, shown
from .stream import Stream, check_ratio, decompressed, ratio_capped
from .tar import trailing_bytes, unpack_tar
from .writer import Writer
from .zip import read_zip_index, stream_zip

__all__ = [
    "Member",
    "Plan",
    "Refused",
    "Stream",
    "Writer",
    "check_ratio",
    "decompressed",
    "ratio_capped",
    "read_zip_index",
    "shown",
    "stream_zip",
    "trailing_bytes",
    "unpack_tar",
]
