"""`colabmagic demo`, the README's first command: it stages the sample set and times
the recipe it replaces on the same simulated Drive."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys


def test_demo_stages_the_sample_set_and_compares_with_the_recipe(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "colabmagic", "demo", "--files", "200", "--profile", "fast"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    actions = re.findall(r"^\s+action\s+(\w+)$", text, re.M)
    assert actions == ["staged", "skipped", "staged"]
    assert re.findall(r"^\s+files\s+([\d,]+)$", text, re.M) == ["200"] * 3
    assert re.findall(r"^\s+source\s+(.+)$", text, re.M) == [
        "My Drive/datasets/cats_dogs.zip",
        "My Drive/datasets/cats_dogs.zip",
        "My Drive/datasets/cats_dogs",
    ]
    # The comparison: the recipe, the DataLoader reading Drive file by file, %stage.
    assert "Drive is simulated, fast profile: 2 ms a cold open" in text
    assert "Profile(" not in text and "Bytes" not in text
    if shutil.which("unzip"):
        assert "&& unzip -q cats_dogs.zip && rm cats_dogs.zip" in text
        assert re.search(r"^  cp \+ unzip -q \+ rm\s+[\d.]+ m?s$", text, re.M), text
        assert re.search(
            r"^  %stage \(the same zip\)\s+[\d.]+ m?s  [\d.]+x (faster|slower)$", text, re.M
        ), text
    assert re.search(
        r"^  from Drive\s+[\d.]+ m?s \([\d.]+ m?s a file; an epoch of 200: ", text, re.M
    ), text
    assert re.search(
        r"^  read 200 files after %stage\s+[\d.]+ m?s  [\d.]+x (faster|slower)$", text, re.M
    ), text
    assert list(tmp_path.iterdir()) == []  # its temporary Drive and copies are gone
