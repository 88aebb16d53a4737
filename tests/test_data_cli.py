"""`pfcbench dataset make` and `pfcbench data` as a user meets them, bad record files included."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.workload.faces import FaceRecFile
from bench.workload.loader import FaceDataset, LoaderOptions, RecLoader, rec_loader
from bench.workload.recordio import IR_SIZE


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
    records = FaceRecFile(made)
    want = Counter(records.image(i)[0] for i in range(records.num_images))
    loader = rec_loader(made, LoaderOptions(batch_size=10, num_workers=2), torch.device("cpu"))
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
        loader = rec_loader(
            made, LoaderOptions(batch_size=10, num_workers=0, rank=rank, world_size=2), torch.device("cpu")
        )
        seen.append(torch.cat([next(loader)[1] for _ in range(3)]))
        loader.close()
    assert Counter(torch.cat(seen).tolist()) == Counter(FaceRecFile(made).image(i)[0] for i in range(60))


class DyingDataset(FaceDataset):
    def __getitem__(self, index):
        if torch.utils.data.get_worker_info() is not None:
            os._exit(3)
        return super().__getitem__(index)


def test_a_worker_that_dies_is_an_error_not_a_hang(made):
    loader = RecLoader(
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
    return FaceRecFile(root).index[key]


def set_label(root, key, value, at=0):
    """Overwrite label `at` of a record: the IRHeader's own for an image, one after it for the header."""
    place = offset_of(root, key) + 8 + (IR_SIZE + 4 * at if key == 0 else 4)
    corrupt_at(root / "train.rec", place, struct.pack("<f", value))


BAD = {
    "missing folder": (lambda r: shutil.rmtree(r), "no such folder"),
    "empty folder": (lambda r: [p.unlink() for p in r.iterdir()], "train.rec: missing"),
    "idx past the end": (lambda r: cut(r / "train.rec", offset_of(r, 0) - 40), "is past the end of"),
    "truncated record": (lambda r: cut(r / "train.rec", offset_of(r, 0) + 12), "key 0: offset"),
    "header record missing": (lambda r: drop_key(r / "train.idx", 0), "no key 0: the header record"),
    "idx is the rec": (lambda r: shutil.copy(r / "train.rec", r / "train.idx"), "not an index"),
    "idx is binary": (
        lambda r: (r / "train.idx").write_bytes(b"0\t8\n\x00\xe9\x01\n"),
        "line 2: byte 0xe9 is not text",
    ),
    "header label infinite": (lambda r: set_label(r, 0, math.inf, at=1), ".0, inf))"),
    "header label negative": (lambda r: set_label(r, 0, -2.0), "not a header record"),
    "image label not whole": (lambda r: set_label(r, 5, 1.25), "key 5: label 1.25 is not a whole number"),
    "image label negative": (lambda r: set_label(r, 9, -1.0), "key 9: label -1 is not a whole number"),
    "image label infinite": (lambda r: set_label(r, 9, -math.inf), "key 9: label -inf is not a whole number"),
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


def test_data_bounds_workers_by_the_cpus_and_sizes_up_front(made):
    most = 4 * len(os.sched_getaffinity(0))
    start = time.monotonic()
    line = one_line(invoke("data", str(made), "--workers", f"1,{most + 1}"))
    assert f"--workers '1,{most + 1}': worker counts must be from 0 to {most}" in line and "per CPU" in line
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # as under taskset -c 0: the CPUs this run may use, not the machine's
    try:
        line = one_line(invoke("data", str(made), "--workers", "1,5"))
    finally:
        os.sched_setaffinity(0, allowed)
    assert "--workers '1,5': worker counts must be from 0 to 4 (4 per CPU, 1 CPU here)" in line
    assert "at most 16 worker counts" in one_line(invoke("data", str(made), "--workers", ",".join(["0"] * 40)))
    assert "--batch-size 70000: must be from 1 to 8,192" in one_line(invoke("data", str(made), "--batch-size", "70000"))
    assert "--steps 5000000000: must be from 1 to 100,000" in one_line(
        invoke("data", str(made), "--steps", "5000000000")
    )
    assert "--nproc 0: must be from 1 to 1,024" in one_line(invoke("data", str(made), "--nproc", "0"))
    assert time.monotonic() - start < 10


def make_refused(tmp_path, folder, *args: str) -> str:
    """The one line of a refused make, checked to have written nothing in tmp_path."""
    before = sorted(tmp_path.rglob("*"))
    line = one_line(invoke("dataset", "make", str(folder), *args))
    assert sorted(tmp_path.rglob("*")) == before
    return line


@pytest.mark.parametrize("size", ["10000001", str(10**15)])
def test_make_refuses_a_size_past_its_limit_at_once(tmp_path, size):
    start = time.monotonic()
    line = make_refused(tmp_path, tmp_path / "faces", "--images", size, "--classes", "3")
    assert f"--images {size} is not from 1 to 10,000,000" in line
    assert time.monotonic() - start < 5


def test_make_refuses_bad_seeds_paths_and_names_in_one_line(tmp_path):
    args = ("--images", "5", "--classes", "2")
    assert "--seed -7 is not from 0" in make_refused(tmp_path, tmp_path / "f", *args, "--seed", "-7")
    (tmp_path / "notes.txt").write_text("mine\n")
    line = make_refused(tmp_path, tmp_path / "notes.txt" / "deep" / "faces", *args)
    assert f"{tmp_path / 'notes.txt'} is not a folder" in line
    assert "a file, not a folder" in make_refused(tmp_path, tmp_path / "notes.txt", *args)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert "a symlink to" in make_refused(tmp_path, tmp_path / "dangling", *args)
    line = make_refused(tmp_path, tmp_path / "faces\rv2", *args)
    assert "faces\\rv2'" in line and "control character" in line
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_make_refuses_a_dataset_larger_than_the_free_space(tmp_path, monkeypatch):
    import bench.recfiles.make

    monkeypatch.setattr(bench.recfiles.make.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 2**20))
    line = make_refused(tmp_path, tmp_path / "faces", "--images", "300", "--classes", "3")
    assert "300 images need about 2 MiB, 1 MiB free in" in line


def test_make_writes_into_the_empty_folder_a_symlink_names(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "faces").symlink_to(tmp_path / "store")
    result = invoke("dataset", "make", str(tmp_path / "faces"), "--images", "6", "--classes", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "faces").is_symlink() and FaceRecFile(tmp_path / "faces").num_images == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", "store"]


def test_make_on_a_read_only_file_system_is_one_line(tmp_path):
    (tmp_path / "base").mkdir()
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(tmp_path / "base"), str(frozen)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only bind mount needs mount rights: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(frozen)], check=True)
        line = make_refused(tmp_path, frozen / "sets" / "faces", "--images", "5", "--classes", "2")
        assert "Read-only file system" in line and "cannot write in" in line
    finally:
        subprocess.run(["umount", str(frozen)], check=True)


def test_make_that_fills_the_disk_leaves_nothing_and_says_so(tmp_path):
    """A file-size limit (ulimit -f) makes the writes fail as a full disk does."""
    root = tmp_path / "made" / "here" / "faces"
    command = f"ulimit -f 32; exec {sys.executable} -m bench.cli dataset make {root} --images 40 --classes 4"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"Error: {root}: writing failed (File too large); nothing was kept"]
    assert list(tmp_path.iterdir()) == []


def test_make_stopped_by_sigterm_leaves_no_half_dataset(tmp_path):
    (tmp_path / "keep").mkdir()
    root = tmp_path / "keep" / "faces"
    command = [sys.executable, "-m", "bench.cli", "dataset", "make", str(root), "--images", "200000", "--classes", "7"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "keep").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode != 0 and "Traceback" not in output and "Error" not in output
    assert list(tmp_path.iterdir()) == [tmp_path / "keep"] and list((tmp_path / "keep").iterdir()) == []
