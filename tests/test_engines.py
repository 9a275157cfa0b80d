"""Hand-off: tar shards written by %packdrive --format tar --shard-size, read sample for
sample by the engines users move to (webdataset, Hugging Face datasets, Ray Data) and
by colabmagic's own open_archive.

Each engine's test runs only where it imports (the ``engines`` test extra); each
asserts every sample's key and bytes, not that nothing failed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import colabmagic


def sample_key(name: str) -> str:
    """WebDataset's key: the member path up to the first dot of its file name."""
    folder, _, base = name.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}" if folder else base.split(".", 1)[0]


@pytest.fixture
def shards(drive_root: Path, tmp_path, monkeypatch) -> tuple[list[Path], dict[str, dict], str]:
    """(shards, {key: {extension: bytes}}, brace URL): 90 two-file samples in Drive,
    packed into tar shards small enough that a boundary falls inside many samples."""
    monkeypatch.setenv("COLABMAGIC_CACHE", str(tmp_path / "cache"))
    rng = random.Random(14)
    folder = drive_root / "MyDrive" / "train"
    samples: dict[str, dict] = {}
    for i in range(90):
        kind = ("cat", "dog")[i % 2]
        (folder / kind).mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(1_000, 9_000))
        label = str(i % 2).encode()
        (folder / kind / f"{i:04d}.bin").write_bytes(data)
        (folder / kind / f"{i:04d}.cls").write_bytes(label)
        samples[f"train/{kind}/{i:04d}"] = {"bin": data, "cls": label}
    result = colabmagic.pack("My Drive/train", format="tar", shard_size=20_000, quiet=True)
    archives = sorted(Path(p) for p in result.archives)
    assert len(archives) > 5
    assert [p.name for p in archives] == [f"train-{i:06d}.tar" for i in range(len(archives))]
    # The brace URL the result prints, to paste into the engines.
    assert result.pattern == f"train-{{000000..{len(archives) - 1:06d}}}.tar"
    return archives, samples, str(archives[0].parent / result.pattern)


def test_files_of_one_sample_sit_together_in_one_shard(shards):
    archives, samples, _ = shards
    seen: dict[str, str] = {}
    read: dict[str, dict] = {}
    for shard in archives:
        names = colabmagic.open_archive(shard).names()
        keys = [sample_key(n) for n in names]
        # Adjacent: a key's files form one run in the shard ...
        runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        assert len(runs) == len(set(runs)), f"{shard.name} interleaves samples"
        for k in runs:  # ... and no other shard holds any of them
            assert k not in seen, f"{k} is split between {seen.get(k)} and {shard.name}"
            seen[k] = shard.name
        with colabmagic.open_archive(shard) as a:
            for n in names:
                read.setdefault(sample_key(n), {})[n.rsplit(".", 1)[1]] = a.read(n)
    assert read == samples


def test_webdataset_reads_every_sample_from_the_printed_brace_url(shards):
    wds = pytest.importorskip("webdataset")
    _, samples, url = shards
    got = {}
    for sample in wds.WebDataset(url, shardshuffle=False):
        got[sample["__key__"]] = {"bin": sample["bin"], "cls": sample["cls"]}
    assert got == samples


def test_hugging_face_datasets_streams_every_sample(shards):
    datasets = pytest.importorskip("datasets")
    archives, samples, _ = shards
    stream = datasets.load_dataset(
        "webdataset", data_files={"train": [str(p) for p in archives]}, split="train",
        streaming=True,
    )  # fmt: skip
    got = {row["__key__"]: {"bin": row["bin"], "cls": row["cls"]} for row in stream}
    # datasets decodes .cls as an int (its DECODERS table); the bytes stay bytes.
    assert got == {k: {"bin": v["bin"], "cls": int(v["cls"])} for k, v in samples.items()}


def test_ray_data_reads_every_sample(shards):
    ray = pytest.importorskip("ray")
    archives, samples, _ = shards
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    try:
        rows = ray.data.read_webdataset([str(p) for p in archives]).take_all()
    finally:
        ray.shutdown()
    got = {row["__key__"]: {"bin": bytes(row["bin"]), "cls": row["cls"]} for row in rows}
    # Ray's default decoder, too, reads .cls as an int.
    assert got == {k: {"bin": v["bin"], "cls": int(v["cls"])} for k, v in samples.items()}
