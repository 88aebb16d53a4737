"""The trace cache: a plan made again reads its traces from disk, and anything the trace depends on misses."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import pytest

import bench.memory
from bench.config import Cell
from bench.memory import (
    ACTIVATIONS,
    BACKBONE_STATE,
    CLASSIFIER_STATE,
    CLASSIFIER_TEMPORARIES,
    TraceProgress,
    Tracer,
    predict_cells,
    prediction_of,
)
from bench.workload import trace_cache
from bench.workload.trace_cache import TraceCache, cache_dir, trace_key

CELL = Cell(backbone="none", classes=2000, batch_size=16, nproc_per_node=2, device="cpu")


def fake_trace(cell: Cell) -> dict:
    """A trace whose numbers say which cell it is of."""
    return {
        "peak_bytes": cell.classes * 10,
        "parts": {
            BACKBONE_STATE: 0,
            ACTIVATIONS: cell.classes * 4,
            CLASSIFIER_STATE: 0,
            CLASSIFIER_TEMPORARIES: cell.classes * 6,
        },
        "backbone_bytes": 0,
        "reserved_bytes": None,
        "events": None,
    }


@pytest.fixture
def traced(monkeypatch) -> list[Cell]:
    """The cells traced, by a fake tracer standing in for the subprocesses."""
    cells: list[Cell] = []

    def tracer(self, todo):
        cells.extend(todo)
        yield from ((index, fake_trace(cell)) for index, cell in enumerate(todo))

    monkeypatch.setattr(bench.memory.Tracer, "trace_cells", tracer)
    return cells


def quiet() -> TraceProgress:
    return TraceProgress(None)


@pytest.mark.slow  # real traces
def test_a_cached_trace_predicts_what_a_fresh_trace_does(tmp_path, monkeypatch):
    cache = TraceCache(tmp_path / "cache")
    other = dataclasses.replace(CELL, classes=3000)
    first = predict_cells([CELL, other], cache=cache, progress=quiet())
    with contextlib.closing(Tracer(num_workers=1)) as tracer:  # the cache unread
        fresh = dict(tracer.trace_cells([CELL, other]))
    assert first == [prediction_of(CELL, fresh[0]), prediction_of(other, fresh[1])]

    monkeypatch.setattr(bench.memory.Tracer, "trace_cells", lambda *args, **kwargs: pytest.fail("traced again"))
    assert predict_cells([other, CELL], cache=cache, progress=quiet()) == first[::-1]


def test_cells_that_step_alike_are_traced_once_and_kept(tmp_path, traced):
    cache = TraceCache(tmp_path)
    timed_longer = dataclasses.replace(CELL, warmup_steps=50, num_windows=9, max_memory_gib=1.5)
    larger = dataclasses.replace(CELL, classes=4000)
    predictions = predict_cells([CELL, timed_longer, larger, CELL], cache=cache, progress=quiet())
    assert traced == [CELL, larger]
    assert [p.parts[ACTIVATIONS] for p in predictions] == [8000, 8000, 16000, 8000]
    predict_cells([timed_longer, larger], cache=cache, progress=quiet())
    assert traced == [CELL, larger]


@pytest.mark.parametrize("changed", ["torch_version", "source_hash", "pfcbench", "seed"])
def test_whatever_the_trace_depends_on_misses(tmp_path, traced, monkeypatch, changed):
    cache = TraceCache(tmp_path)
    predict_cells([CELL], cache=cache, progress=quiet())
    cell = CELL
    if changed == "pfcbench":
        monkeypatch.setattr(trace_cache.bench, "__version__", "99.0")
    elif changed == "seed":
        cell = dataclasses.replace(CELL, seed=1)
    else:
        monkeypatch.setattr(trace_cache, changed, lambda: "something else")
    assert cache.get(trace_key(cell)) is None
    predict_cells([cell], cache=cache, progress=quiet())
    assert traced == [CELL, cell]


def test_the_key_covers_the_trace_sources():
    sources = {path.name for path in trace_cache.BENCH.glob("workload/*.py")}
    assert {"memtrace.py", "predict.py", "allocator.py", "partial_fc_2022.py"} <= sources
    assert len(trace_cache.source_hash()) == 64


@pytest.mark.parametrize(
    "damage",
    ["", "{not json", "[]", '{"key": "other", "trace": {}}', '{"key": "K", "trace": 3}', '{"key": "K", "trace": {}}'],
)
def test_a_damaged_entry_is_traced_again_and_rewritten(tmp_path, traced, damage):
    cache = TraceCache(tmp_path)
    key = trace_key(CELL)
    cache.path(key).write_text(damage.replace('"K"', json.dumps(key)))
    (prediction,) = predict_cells([CELL], cache=cache, progress=quiet())
    assert traced == [CELL] and prediction == prediction_of(CELL, fake_trace(CELL))
    assert cache.get(key) == fake_trace(CELL)
    assert not list(tmp_path.glob("*.tmp"))


def test_the_cache_keeps_the_newest_entries(tmp_path):
    cache = TraceCache(tmp_path, max_entries=3)
    for number in range(5):
        cache.put(f"k{number}", fake_trace(CELL))
        cache.get("k0")  # read: among the newest
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == ["k0", "k3", "k4"]


def test_the_cache_lives_in_the_users_cache_folder_never_the_working_one(tmp_path, monkeypatch, traced):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # not absolute: ignored, as the XDG spec says
    assert cache_dir() == home / ".cache" / "pfcbench" / "traces"
    predict_cells([CELL], progress=quiet())
    assert list(work.iterdir()) == []
    assert len(list(cache_dir().glob("*.json"))) == 1

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pfcbench" / "traces"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == home / ".cache" / "pfcbench" / "traces"


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path, traced):
    blocked = tmp_path / "file"
    blocked.write_text("")
    (prediction,) = predict_cells([CELL], cache=TraceCache(blocked / "traces"), progress=quiet())
    assert prediction == prediction_of(CELL, fake_trace(CELL))


def test_progress_goes_to_stderr_only_while_tracing(tmp_path, traced, capsys, monkeypatch):
    cache = TraceCache(tmp_path)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    predict_cells([CELL, dataclasses.replace(CELL, classes=3000)], cache=cache)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "tracing the step of 2 cells to predict memory"
    assert lines[1].startswith("traced 1/2: none, 2,000 classes, batch 16, fp32 (")
    assert lines[2].startswith("traced 2/2: none, 3,000 classes")

    predict_cells([CELL], cache=cache)  # all cached: nothing to say
    assert capsys.readouterr() == ("", "")


def test_progress_is_quiet_where_stderr_is_no_terminal_unless_given_a_stream(tmp_path, traced):
    stream = io.StringIO()
    assert TraceProgress.on_terminal().stream is None  # pytest's captured stderr
    progress = TraceProgress(stream)
    predict_cells([CELL], cache=TraceCache(tmp_path), progress=progress)
    assert "traced 1/1" in stream.getvalue()
