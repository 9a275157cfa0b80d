"""`colabmagic demo`, the README's first command, runs and shows its three results."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_stages_the_sample_set(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "colabmagic", "demo", "--files", "200", "--profile", "fast"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    actions = re.findall(r"^\s+action\s+(\w+)$", out.stdout, re.M)
    assert actions == ["staged", "skipped", "staged"]
    assert re.findall(r"^\s+files\s+([\d,]+)$", out.stdout, re.M) == ["200"] * 3
    assert list(tmp_path.iterdir()) == []  # its temporary Drive and copies are gone
