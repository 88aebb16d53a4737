"""The plan of a sweep: each cell of a matrix with its newest record, what still has to run, and what a
recorded out-of-memory implies. run, collect, search, status and plan build it here, one way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import Cell, one_line
from bench.matrix import Matrix, load_matrix
from bench.plan.search import is_settled
from bench.store.results import FAILED, FINAL, Results, is_ok, latest_by_cell, read_results
from bench.verdicts import training_speed


@dataclass(frozen=True, kw_only=True)
class PlanSource:
    """What a run built its plan from besides the results folder (its matrix.toml and records): enough to build
    the same plan again."""

    overrides: dict[str, Any] = field(default_factory=dict)
    """Cell fields set over every cell from the command line (--nproc, --set, ...)."""
    section_numbers: tuple[int, ...] = ()
    """The matrix's sections the run kept (--section), numbered from 1; () for every section."""
    rerun: str | None = None
    """What --rerun ran again (failed, all), or None."""

    def to_dict(self) -> dict:
        return {"overrides": self.overrides, "section_numbers": list(self.section_numbers), "rerun": self.rerun}

    @classmethod
    def of_entry(cls, entry: dict) -> PlanSource:
        """The source kept in a ledger entry; an entry written before entries kept one had no overrides to keep."""
        kept = entry.get("plan", {})
        if not (
            isinstance(kept, dict)
            and isinstance(kept.get("overrides", {}), dict)
            and isinstance(kept.get("section_numbers", []), list)
            and all(type(n) is int for n in kept.get("section_numbers", []))
            and isinstance(kept.get("rerun"), str | None)
        ):
            raise ValueError(
                "key 'plan': expected {overrides: object, section_numbers: [numbers], rerun: text or null}"
            )
        return cls(
            overrides=kept.get("overrides", {}),
            section_numbers=tuple(kept.get("section_numbers", ())),
            rerun=kept.get("rerun"),
        )


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a run of a matrix would do: each cell with its newest record, if any."""

    matrix: Matrix
    results_dir: Path
    cells: list[Cell]
    latest: dict[str, dict]
    rerun: str | None = None
    results: Results | None = None
    """What was read from the results file, with the lines skipped as not records."""
    sections: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Cell id -> titles of the sections that hold it."""

    @property
    def results_file(self) -> Path:
        return self.results_dir / "results.jsonl"

    def pending(self) -> list[Cell]:
        return [cell for cell in self.cells if needs_run(self.latest.get(cell.cell_id), self.rerun)]

    def pending_searches(self) -> list[tuple[Cell, str]]:
        """The searches whose recorded probes do not answer them yet."""
        return [(cell, field) for cell, field in self.matrix.searches() if not is_settled(cell, field, self.latest)]

    @property
    def source(self) -> PlanSource:
        """What this plan was built from besides its results folder, to build it again (pfcbench collect)."""
        return PlanSource(
            overrides=self.matrix.overrides, section_numbers=self.matrix.section_numbers, rerun=self.rerun
        )

    def sections_of(self, cell: Cell) -> list[str]:
        return self.sections.get(cell.cell_id, [])

    def search_sections_of(self, cell: Cell, field: str) -> list[str]:
        """Titles of the sections that search field from this cell."""
        return [
            s.title
            for s in self.matrix.sections
            if s.search == field and any(r.cell.cell_id == cell.cell_id for r in s.rows)
        ]


def needs_run(record: dict | None, rerun: str | None) -> bool:
    """A cell runs when it has no final record, or when --rerun asks for it: "failed" runs errors,
    timeouts and ok cells that are no training speed (a NaN loss) again."""
    if record is None or record.get("status") not in FINAL:
        return True
    failed = record["status"] in FAILED or (is_ok(record) and training_speed(record) is None)
    return rerun == "all" or (rerun == "failed" and failed)


def make_plan(matrix: Matrix, results_root: Path, rerun: str | None = None) -> Plan:
    return plan_in(matrix, results_root / matrix.name, rerun)


def plan_in(matrix: Matrix, results_dir: Path, rerun: str | None = None) -> Plan:
    """The plan of a matrix whose results folder is results_dir."""
    results = read_results(results_dir / "results.jsonl")
    sections: dict[str, list[str]] = {}
    for section in (s for s in matrix.sections if s.search is None):
        for row in section.rows:
            titles = sections.setdefault(row.cell.cell_id, [])
            if section.title not in titles:
                titles.append(section.title)
    return Plan(
        matrix=matrix,
        results_dir=results_dir,
        cells=matrix.cells(),
        latest=latest_by_cell(results.records),
        rerun=rerun,
        results=results,
        sections=sections,
    )


def oom_implies(cell: Cell, records: dict[str, dict]) -> dict | None:
    """An oom record of the same config at a batch no larger than this cell's, if there is one."""
    for record in records.values():
        if record.get("status") != "oom":
            continue
        try:
            other = Cell.from_dict(record["config"])
        except ValueError:  # a record of a cell this version cannot build
            continue
        if other.batch_size <= cell.batch_size and dataclasses.replace(other, batch_size=cell.batch_size) == cell:
            return record
    return None


class PlanError(ValueError):
    """A plan that cannot be built again: its results folder holds no readable matrix.toml."""


def plan_again(results_dir: Path, source: PlanSource) -> Plan:
    """The plan a run of results_dir built: its matrix.toml and records, with what the run built it from besides."""
    try:
        matrix = load_matrix(results_dir / "matrix.toml", source.overrides).only_sections(source.section_numbers)
        return plan_in(matrix, results_dir, source.rerun)
    except (ValueError, OSError) as exc:
        raise PlanError(f"{results_dir}: not the results folder of a sweep ({one_line(str(exc))})") from None
