"""Reading a results folder for a report: the matrix it ran, its records, and the machine descriptions they name."""

from __future__ import annotations

import json
from pathlib import Path

from bench.config import shown
from bench.matrix import Matrix, load_matrix
from bench.plan.search import all_probes
from bench.report.server import env_problem
from bench.store.files import FileError, read_text
from bench.store.results import ReportError, Results, read_results


def read_json(path: Path) -> dict:
    try:
        value = json.loads(read_text(path))
    except FileError as exc:
        raise ReportError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"{path}: cannot read: not JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: cannot read: not a JSON object")
    return value


def read_envs(results_dir: Path, records: list[dict]) -> dict[str, tuple[dict, int]]:
    """The machine descriptions the records point at (env.json for records that name none), with their record counts.

    A name that is not a file of the results folder (empty, absolute, through "..", a symlink out
    of it) or a description a report cannot use is one line naming the record's env or the file.
    """
    counts: dict[str, int] = {}
    for record in records:
        name = env_name(Path(results_dir), "env.json" if record.get("env") is None else record["env"])
        counts[name] = counts.get(name, 0) + 1
    counts = counts or {"env.json": 0}
    return {name: (read_env(Path(results_dir) / name), count) for name, count in counts.items()}


def env_name(results_dir: Path, name: object) -> str:
    """A record's env, checked to name a file in the results folder."""
    said = f"{results_dir}: a record's env is {shown(name)}"
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ReportError(f"{said}, not the name of a file in the results folder")
    inside = (results_dir / name).resolve().is_relative_to(results_dir.resolve())
    if Path(name).is_absolute() or ".." in Path(name).parts or not inside:
        raise ReportError(f"{said}, outside the results folder")
    return name


def read_env(path: Path) -> dict:
    env = read_json(path)
    if problem := env_problem(env):
        raise ReportError(f"{path}: not a machine description: {problem}")
    return env


def run_env(results_dir: Path, matrix: Matrix, latest: dict[str, dict]) -> tuple[dict, str | None]:
    """The machine most of a run's reported records (each cell's latest, and the search probes) ran on, and a
    note where they name several (mixed_env_note)."""
    reported = [latest[c.cell_id] for c in matrix.cells() if c.cell_id in latest]
    reported += all_probes(matrix.searches(), latest)
    envs = read_envs(Path(results_dir), reported)
    return max(envs.values(), key=lambda pair: pair[1])[0], mixed_env_note(envs)


def mixed_env_note(envs: dict[str, tuple[dict, int]]) -> str | None:
    """A note saying that the records come from several machine descriptions, and how those differ."""
    if len(envs) < 2:
        return None
    keys = sorted({key for env, _ in envs.values() for key in env})
    differ = [k for k in keys if len({json.dumps(env.get(k), sort_keys=True) for env, _ in envs.values()}) > 1]
    listing = ", ".join(f"{name} ({count} cells)" for name, (_, count) in envs.items())
    return (
        f"These records come from {len(envs)} environments, which differ in {', '.join(differ) or 'nothing shown'}: "
        f"{listing}. The server spec above is the one of most cells."
    )


def read_run(results_dir: Path, matrix_path: Path | None = None) -> tuple[Matrix, Results]:
    """The matrix a results directory ran (its matrix.toml unless given) and its records, oldest first.

    When the records carry the cell-field overrides the run was started with ("overrides"), the
    newest ones are applied, so that the matrix's cells have the ids the run recorded.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReportError(f"{results_dir}: no such results directory")
    results_path = results_dir / "results.jsonl"
    if not results_path.exists():
        raise ReportError(f"{results_path}: no such file")
    results = read_results(results_path)
    matrix_path = Path(matrix_path or results_dir / "matrix.toml")
    if not matrix_path.exists():
        raise ReportError(f"{matrix_path}: no such file (give the matrix with --matrix FILE)")
    overrides = next((r["overrides"] for r in reversed(results.records) if r.get("overrides")), {})
    return load_matrix(matrix_path, overrides if isinstance(overrides, dict) else {}), results
