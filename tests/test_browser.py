"""notebooks/rehearse.ipynb, executed in a real kernel and read in a real browser.

The notebook runs %drive --fake, %drive, %timeread, %stage and %drive --unmount; its
HTML export is loaded in headless Chromium, which measures the rendered tables and the
chart and writes what it found into the page, so that the DOM says whether they are
there and visible.  A screenshot lands beside it for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "rehearse.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

# Runs in the page once it has loaded: every colabmagic table and chart, with its
# rendered size and the styles that could hide it, as JSON in <pre id="colabmagic-check">.
MEASURE = """
<script>
window.addEventListener("load", () => {
  const found = [];
  for (const el of document.querySelectorAll(".colabmagic > table, svg.colabmagic-chart")) {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    const title = el.querySelector("caption > b");
    const badge = el.querySelector("caption > .colabmagic-badge");
    const badgeStyle = badge ? getComputedStyle(badge) : null;
    const badgeBox = badge ? badge.getBoundingClientRect() : null;
    found.push({
      tag: el.tagName.toLowerCase(),
      caption: title ? title.textContent : "",
      badge: badge ? {
        text: badge.innerText,
        background: badgeStyle.backgroundColor,
        color: badgeStyle.color,
        width: badgeBox.width,
        height: badgeBox.height,
      } : null,
      cells: Array.from(el.querySelectorAll("tr")).map(
        (tr) => Array.from(tr.children).map((c) => c.innerText)),
      rows: el.querySelectorAll("tr").length,
      bars: el.querySelectorAll("rect").length,
      width: box.width,
      height: box.height,
      display: style.display,
      visibility: style.visibility,
      opacity: style.opacity,
    });
  }
  const out = document.createElement("pre");
  out.id = "colabmagic-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>
"""


class _CheckReader(HTMLParser):
    """The text of <pre id="colabmagic-check"> in a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self._inside = False
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inside = tag == "pre" and ("id", "colabmagic-check") in attrs

    def handle_endtag(self, tag: str) -> None:
        self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.text += data


def _chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            # The export links MathJax and require.js from a CDN; fail those at once.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1100,2600",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_rehearse_notebook_reads_well_in_a_browser(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    # The kernel imports this checkout of colabmagic, installed or not.
    repo = str(NOTEBOOK.parents[1])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert [page.split("<b>", 1)[1].split("</b>", 1)[0] for page in shown] == [
        "%drive",
        "%timeread",
        "%stage",
        "%drive",
    ]
    assert "simulated Drive" in shown[0] or "FUSE" in shown[0] or "unavailable" in shown[0]

    body, _ = HTMLExporter().from_notebook_node(notebook)
    page = tmp_path / "rehearse.html"
    page.write_text(body.replace("</body>", MEASURE + "</body>"), encoding="utf-8")

    dom = _chromium(page, tmp_path / "chromium-dom", "--dump-dom").stdout
    reader = _CheckReader()
    reader.feed(dom)
    assert reader.text, "the measuring script did not run"
    found = json.loads(reader.text)

    tables = [f for f in found if f["tag"] == "table"]
    charts = [f for f in found if f["tag"] == "svg"]
    assert [t["caption"] for t in tables] == ["%drive", "%timeread", "%stage", "%drive"]
    assert len(charts) == 1
    assert charts[0]["bars"] >= 8  # a legend and at least three pairs of bars
    for element in tables + charts:
        assert element["width"] > 100 and element["height"] > 40, element
        assert element["display"] != "none" and element["visibility"] == "visible", element
        assert float(element["opacity"]) > 0, element
    timeread_table = tables[1]
    assert timeread_table["rows"] >= 8
    # The rendered text and the badge's computed colour, not pixels.
    assert [t["badge"] and t["badge"]["text"] for t in tables] == [None, None, "staged", None]
    badge = tables[2]["badge"]
    assert badge["background"] == "rgb(19, 115, 51)" and badge["color"] == "rgb(255, 255, 255)"
    assert badge["width"] > 20 and badge["height"] > 8, badge
    stage_cells = dict(tables[2]["cells"])
    assert stage_cells["action"] == "staged"
    assert stage_cells["source"] == "My Drive/train.zip"
    assert stage_cells["files"] == "302"
    drive_cells = dict(tables[0]["cells"])
    assert drive_cells["mount"].startswith(("simulated Drive", "plain folder"))
    assert tables[2]["width"] < 1000  # narrow: long paths wrap inside their cell

    screenshot = tmp_path / "page.png"
    _chromium(page, tmp_path / "chromium-shot", f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 10_000
