"""`pfcbench dataset make` and `pfcbench data` as a user meets them, bad record files included."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.data.faces import FaceRecords
from bench.workload.data import FaceDataset, LoaderOptions, RecordLoader, record_loader


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(result, code: int = 2) -> str:
    """The one error line of a refused command; fails on a traceback or a second line."""
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("made") / "faces"
    result = invoke("dataset", "make", str(root), "--images", "60", "--classes", "4")
    assert result.exit_code == 0, result.output
    assert "60 images, 4 classes, mean" in result.output
    return root


@pytest.fixture
def faces(made, tmp_path):
    root = tmp_path / "faces"
    shutil.copytree(made, root)
    return root


def test_data_prints_samples_per_second_per_worker_count_and_rank(made):
    result = invoke(
        "data", str(made), "--workers", "0,1", "--batch-size", "8", "--steps", "2", "--nproc", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    rates = json.loads(result.output)
    assert [(r["num_workers"], r["rank"]) for r in rates] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r["samples_per_s"] > 0 for r in rates)


def test_two_worker_processes_read_every_image_with_its_label(made):
    records = FaceRecords(made)
    want = Counter(records.image(i)[0] for i in range(records.num_images))
    loader = record_loader(made, LoaderOptions(batch_size=10, num_workers=2), torch.device("cpu"))
    try:
        batches = [next(loader) for _ in range(6)]  # one epoch
    finally:
        loader.close()
    images = torch.cat([b[0] for b in batches])
    assert Counter(torch.cat([b[1] for b in batches]).tolist()) == want
    assert images.shape == (60, 3, 112, 112) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.std() > 0.1
    assert len(loader.waits_s) == 6


def test_ranks_read_disjoint_shards(made):
    seen = []
    for rank in range(2):
        loader = record_loader(
            made, LoaderOptions(batch_size=10, num_workers=0, rank=rank, world_size=2), torch.device("cpu")
        )
        seen.append(torch.cat([next(loader)[1] for _ in range(3)]))
        loader.close()
    assert Counter(torch.cat(seen).tolist()) == Counter(FaceRecords(made).image(i)[0] for i in range(60))


class DyingDataset(FaceDataset):
    def __getitem__(self, index):
        if torch.utils.data.get_worker_info() is not None:
            os._exit(3)
        return super().__getitem__(index)


def test_a_worker_that_dies_is_an_error_not_a_hang(made):
    loader = RecordLoader(
        DyingDataset(made), LoaderOptions(batch_size=10, num_workers=2, timeout_s=20), torch.device("cpu")
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="DataLoader worker .* exited unexpectedly"):
        next(loader)
    loader.close()
    assert time.monotonic() - start < 20


def cut(path, keep_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def drop_key(idx, key):
    lines = [line for line in idx.read_text().splitlines() if line.split("\t")[0] != str(key)]
    idx.write_text("\n".join(lines) + "\n")


def corrupt_at(rec, offset, data):
    raw = bytearray(rec.read_bytes())
    raw[offset : offset + len(data)] = data
    rec.write_bytes(bytes(raw))


def offset_of(root, key):
    return FaceRecords(root).index[key]


BAD = {
    "missing folder": (lambda r: shutil.rmtree(r), "no such folder"),
    "empty folder": (lambda r: [p.unlink() for p in r.iterdir()], "train.rec: missing"),
    "idx past the end": (lambda r: cut(r / "train.rec", offset_of(r, 0) - 40), "is past the end of"),
    "truncated record": (lambda r: cut(r / "train.rec", offset_of(r, 0) + 12), "key 0: offset"),
    "header record missing": (lambda r: drop_key(r / "train.idx", 0), "no key 0: the header record"),
    "image does not decode": (
        lambda r: corrupt_at(r / "train.rec", offset_of(r, 1) + 8 + 24, b"\0" * 64),
        "key 1: image does not decode",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_record_folder_is_refused_in_one_line(faces, case):
    spoil, words = BAD[case]
    spoil(faces)
    before = sorted(p.name for p in faces.iterdir()) if faces.exists() else None
    line = one_line(invoke("data", str(faces), "--workers", "0", "--batch-size", "4", "--steps", "1"))
    assert words in line and str(faces) in line
    assert (sorted(p.name for p in faces.iterdir()) if faces.exists() else None) == before


def test_truncated_record_message_says_truncated(faces):
    cut(faces / "train.rec", offset_of(faces, 0) + 12)
    assert "truncated record" in one_line(invoke("data", str(faces), "--workers", "0", "--batch-size", "4"))


def test_wrong_magic_inside_the_file_is_found_by_a_worker_and_named_in_one_line(faces):
    corrupt_at(faces / "train.rec", offset_of(faces, 7), b"\x01\x02\x03\x04")
    line = one_line(invoke("data", str(faces), "--workers", "2", "--batch-size", "30", "--steps", "4"))
    assert "key 7: offset" in line and "wrong magic number 0x04030201" in line


def test_fewer_images_than_one_global_batch(made):
    line = one_line(invoke("data", str(made), "--batch-size", "40", "--nproc", "2"))
    assert "60 images, fewer than one global batch (40 x 2 ranks)" in line


def test_make_refuses_a_non_empty_folder_and_writes_nothing(made, tmp_path):
    line = one_line(invoke("dataset", "make", str(made), "--images", "5", "--classes", "2"))
    assert "not empty" in line
    line = one_line(invoke("dataset", "make", str(tmp_path / "new"), "--images", "2", "--classes", "5"))
    assert "5 classes need at least as many images" in line
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == []


def test_make_interrupted_leaves_no_half_dataset(tmp_path):
    root = tmp_path / "faces"
    command = [sys.executable, "-m", "bench.cli", "dataset", "make", str(root), "--images", "20000", "--classes", "10"]
    # SIGINT reset: a suite started as a shell background job passes SIGINT on as ignored.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".faces.") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    assert process.returncode != 0
    assert list(tmp_path.iterdir()) == []
