"""Every notebook in notebooks/ runs top to bottom in a real kernel, errors disallowed,
and shows what it says it shows: each result a table with its cells filled in."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
REPO = str(Path(__file__).resolve().parents[1])


class Tables(HTMLParser):
    """Each colabmagic table of an HTML output: its caption, badge and (th, td) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._text: list[str] | None = None
        self._where = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append({"caption": "", "badge": None, "cells": []})
        elif self.tables and tag in ("b", "th", "td"):
            self._where, self._text = tag, []
        elif self.tables and tag == "span" and found.get("class") == "colabmagic-badge":
            self._where, self._text = "badge", []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._text is None or tag not in ("b", "th", "td", "span"):
            return
        text, table = "".join(self._text).strip(), self.tables[-1]
        if self._where == "b":
            table["caption"] = text
        elif self._where == "badge":
            table["badge"] = text
        elif self._where == "th":
            table["cells"].append([text, None])
        elif self._where == "td" and table["cells"]:
            table["cells"][-1][1] = text
        self._text = None


def run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The executed notebook: its outputs, and its colabmagic tables as parsed above."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.delenv("COLABMAGIC_DRIVE", raising=False)
    # The kernel imports this checkout of colabmagic, installed or not.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    tables = []
    for output in outputs:
        page = output.get("data", {}).get("text/html")
        if page:
            reader = Tables()
            reader.feed(page)
            assert reader.tables, page[:300]
            tables += reader.tables
    return outputs, tables


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_every_result_is_a_filled_table(path, tmp_path, monkeypatch):
    outputs, tables = run(path, tmp_path, monkeypatch)
    assert tables, "no result was shown"
    for table in tables:
        assert table["caption"], table
        assert table["cells"] and all(label and value for label, value in table["cells"]), table
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "IProgress not found" not in streams and "TqdmWarning" not in streams


def test_quickstart_shows_staged_then_skipped(tmp_path, monkeypatch):
    path = Path(REPO) / "notebooks" / "quickstart.ipynb"
    outputs, tables = run(path, tmp_path, monkeypatch)
    assert [(t["caption"], t["badge"]) for t in tables] == [
        ("%stage", "staged"),
        ("%stage", "skipped"),
    ]
    cells = dict(tables[0]["cells"])
    assert cells["action"] == "staged" and cells["files"] == "500"
    assert cells["source"] == "My Drive/datasets/cats_dogs.zip"
    assert cells["entries"] == "cats_dogs"
    assert re.fullmatch(r"[\d.]+ [kM]B", cells["bytes"]), cells
    assert dict(tables[1]["cells"])["read from source"] == "0 B"
    printed = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert re.search(r"^500 files in \S*cats_dogs$", printed, re.M), printed
