"""`python -m benchmarks` completes on a small set and writes its JSON (no timing asserted).

The page cache is kept (`--keep-page-cache`): dropping it would slow every other test on
the machine, and these runs check the harness, not the figures.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from colabmagic import fakedrive

REPO = Path(__file__).resolve().parents[1]
SEED = {"S1", "S1f", "S2", "S3", "P1"}
PEER_CASES = {"Z": {"unzip", "bsdtar", "zipfile"}, "T": {"tar", "pigz"}, "F": {"xargs"}}
FLOOR_CASES = {"Zf", "Tf"}
CASES = SEED | set(PEER_CASES) | FLOOR_CASES | {"S1p"}

_reason = fakedrive.available()
if _reason:
    pytest.skip(f"fake Drive unavailable: {_reason}", allow_module_level=True)


def benchmark(tmp_path: Path, *args: str) -> tuple[dict, list[str]]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--keep-page-cache"]
        + ["--json", str(out), "--cache", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout.splitlines()


def finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_benchmark_writes_every_case(tmp_path):
    doc, table = benchmark(
        tmp_path, "--files", "200", "--pairs", "1", "--profile", "fast", "--large-mb", "4"
    )
    assert set(doc["cases"]) == CASES
    assert (doc["profile"], doc["files"], doc["data"]) == ("fast", 200, "random")
    assert {line.split()[0] for line in table if line.split()} >= CASES  # one row per case
    cases = doc["cases"]
    multistream = cases["S1p"].get("error") != "profile multistream not available"
    for name, case in cases.items():
        if name == "S1p" and not multistream:
            assert any("profile multistream not available" in line for line in table)
            continue
        for key in ("ratio_median", "ratio_min", "ratio_max", "target"):
            assert finite(case[key]), (name, key, case)
        assert isinstance(case["met"], bool)
        assert all(finite(t) for t in case["colabmagic_s"] + case["baseline_s"]), case
    assert doc["peak_rss_mb"] > 0 and doc["import_ms"] > 0
    floor = cases["S1f"]["baseline_s_median"] / cases["S1"]["baseline_s_median"]
    assert doc["s1_floor"] == pytest.approx(floor, abs=1e-4)
    assert any(line.startswith("floor") for line in table)
    assert len(cases["S1"]["colabmagic_s"]) == len(cases["S1"]["baseline_s"]) == 1
    assert cases["S1"]["target"] == 0.70

    # Each peer has a row of its own, timed or "not installed", and the case's ratio is
    # the in-process stage's median over the fastest peer's median.
    for name, peers in PEER_CASES.items():
        case = cases[name]
        assert set(case["peers"]) == peers
        timed = {}
        for peer, row in case["peers"].items():
            if "not_installed" in row:
                assert any(f"not installed: {row['not_installed']}" in line for line in table)
                continue
            assert all(finite(t) for t in row["seconds"]), row
            assert any(line.split()[:2] == ["vs", peer] for line in table), peer
            timed[peer] = statistics.median(row["seconds"])
        best = min(timed, key=timed.get)
        assert case["best_peer"] == best
        ours = statistics.median(case["colabmagic_s"])
        assert case["ratio_median"] == pytest.approx(ours / timed[best], rel=2e-3), name
        assert case["colabmagic"] == "inprocess"
    for name in FLOOR_CASES:
        case = cases[name]
        assert case["baseline"] == "cat"
        ours, cat = statistics.median(case["colabmagic_s"]), statistics.median(case["baseline_s"])
        assert case["ratio_median"] == pytest.approx(ours / cat, rel=2e-3), name
    # The CLI and the in-process stage of the same zip were both timed.
    zip_runs = doc["runs"]["zip"]["seconds"]
    assert {"cli", "inprocess", "recipe", "cat"} <= set(zip_runs)
    assert cases["Z"]["colabmagic_s"] == zip_runs["inprocess"]


def test_mixed_set_has_compressible_members(tmp_path):
    doc, _ = benchmark(
        tmp_path,
        "--files",
        "40",
        "--pairs",
        "1",
        "--profile",
        "fast",
        "--data",
        "mixed",
        "--cases",
        "Z,Tf",
    )
    assert doc["data"] == "mixed" and set(doc["cases"]) == {"Z", "Tf"}
    assert finite(doc["cases"]["Z"]["ratio_median"])

    built = tmp_path / "data" / "layout1-mixed-files40" / "MyDrive" / "datasets" / "train.zip"
    with zipfile.ZipFile(built) as zf:
        methods = {i.filename.rsplit(".", 1)[1]: i.compress_type for i in zf.infolist()}
        xml = [i for i in zf.infolist() if i.filename.endswith(".xml")]
    assert methods == {"xml": zipfile.ZIP_DEFLATED, "jpg": zipfile.ZIP_STORED}
    assert len(xml) == 20
    assert sum(i.compress_size for i in xml) * 3 < sum(i.file_size for i in xml)


def test_scale_mode(tmp_path):
    doc, table = benchmark(tmp_path, "--files", "200,400")
    assert doc["mode"] == "scale" and set(doc["sizes"]) == {"200", "400"}
    for members, tools in doc["sizes"].items():
        assert set(tools) == {"colabmagic", "unzip", "bsdtar", "archive_bytes"}
        for tool in ("colabmagic", "unzip", "bsdtar"):
            row = tools[tool]
            if "not_installed" in row:
                continue
            assert "error" not in row, (members, tool, row)
            assert finite(row["us_per_member"]) and finite(row["peak_rss_mb"]), row
            median = statistics.median(row["seconds"])
            assert row["us_per_member"] == pytest.approx(median / int(members) * 1e6, rel=2e-3)
    ours = doc["sizes"]["400"]["colabmagic"], doc["sizes"]["200"]["colabmagic"]
    growth = doc["targets"]["us_per_member_growth"]
    assert growth["value"] == pytest.approx(
        ours[0]["us_per_member"] / ours[1]["us_per_member"], rel=1e-3
    )
    assert doc["targets"]["peak_rss_mb"]["value"] == ours[0]["peak_rss_mb"]
    assert sum(line.startswith("target:") for line in table) == 3
    with zipfile.ZipFile(tmp_path / "data" / "layout1-scale-400" / "scale.zip") as zf:
        sizes = [i.file_size for i in zf.infolist()]
        names = zf.namelist()
    assert len(sizes) == 400 and min(sizes) >= 50 and max(sizes) <= 400
    assert names[0] == "train/0000/0000000.bin"
