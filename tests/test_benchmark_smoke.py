"""`python -m benchmarks` completes on a small set and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from colabmagic import fakedrive

REPO = Path(__file__).resolve().parents[1]
CASES = {"S1", "S1f", "S2", "S3", "P1"}

_reason = fakedrive.available()
if _reason:
    pytest.skip(f"fake Drive unavailable: {_reason}", allow_module_level=True)


def test_benchmark_writes_every_case(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--files", "200", "--pairs", "1"]
        + ["--profile", "fast", "--json", str(out), "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert set(doc["cases"]) == CASES
    for name, case in doc["cases"].items():
        for key in ("ratio_median", "ratio_min", "ratio_max", "target"):
            assert isinstance(case[key], float) and math.isfinite(case[key]), (name, key, case)
        assert isinstance(case["met"], bool)
    assert doc["peak_rss_mb"] > 0 and doc["import_ms"] > 0
    assert (doc["profile"], doc["files"]) == ("fast", 200)
    table = done.stdout.splitlines()
    assert {line.split()[0] for line in table if line.split()} >= CASES  # one row per case
    cases = doc["cases"]
    floor = cases["S1f"]["baseline_s_median"] / cases["S1"]["baseline_s_median"]
    assert doc["s1_floor"] == pytest.approx(floor, abs=1e-4)
    assert any(line.startswith("floor") for line in table)
    assert len(cases["S1"]["colabmagic_s"]) == len(cases["S1"]["baseline_s"]) == 1
