"""The Result base: one unit style, Drive paths as typed, the action as a badge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from colabmagic.results import Result, size


def test_sizes_share_one_unit_style():
    assert [size(n) for n in (0, 1, 999, 1000, 797_800, 2_500_000_000)] == [
        "0 B",
        "1 B",
        "999 B",
        "1.0 kB",
        "797.8 kB",
        "2.5 GB",
    ]


def test_stage_result_spells_drive_paths_as_typed(ip, drive_root, workdir):
    folder = drive_root / "MyDrive" / "data sets"
    folder.mkdir()
    (folder / "x.txt").write_bytes(b"x")
    result = ip.run_line_magic("stage", '"/content/drive/MyDrive/data sets/x.txt" --to out')
    text = str(result)
    assert re.search(r"^  source\s+My Drive/data sets/x\.txt$", text, re.M), text
    assert re.search(rf"^  dest\s+{re.escape(str(workdir / 'out'))}$", text, re.M), text
    assert str(drive_root) not in text
    assert "<td" in result._repr_html_() and "My Drive/data sets/x.txt</td>" in (
        result._repr_html_()
    )
    again = ip.run_line_magic("stage", '"My Drive/data sets/x.txt" --to out')
    assert re.search(r"^  read from source\s+0 B$", str(again), re.M), str(again)


@dataclass(frozen=True, repr=False)
class _Done(Result):
    action: str
    where: Path

    title = "%thing"

    def rows(self) -> list[tuple[str, str]]:
        return [("action", self.action), ("where", str(self.where))]


def test_action_is_a_badge_that_reads_as_text():
    page = _Done("staged", Path("/tmp/a"))._repr_html_()
    badge = re.search(
        r'<span class="colabmagic-badge" data-action="staged" style="([^"]*)">'
        r"staged</span>",
        page,
    )
    assert badge, page
    assert "background:#137333" in badge[1]
    skipped = _Done("skipped", Path("/tmp/a"))._repr_html_()
    assert 'data-action="skipped"' in skipped and "background:#5f6368" in skipped
    refused = _Done("refused", Path("/tmp/a"))._repr_html_()
    assert "background:#b3261e" in refused
    assert str(_Done("staged", Path("/tmp/a"))).splitlines()[0] == "%thing"


def test_badge_and_values_are_escaped():
    page = _Done("<b>x</b>", Path('/tmp/<script>"'))._repr_html_()
    assert "<b>x</b>" not in page and "<script>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "&lt;script&gt;" in page


def test_results_without_an_action_have_no_badge(ip):
    assert "colabmagic-badge" not in ip.run_line_magic("drive", "")._repr_html_()
