"""A site's pages put together and written whole, its assets beside them, and a server for a quick look.

The site is one flat folder: index.html, a page per sweep, per matrix across machines and per published
matrix, plotly.js (from the plotly package, written once), site.js and site.css, and a marker file that
says pfcbench wrote the folder and lists its files. The folder is written beside the old one and put in
its place by renames, so that a reader never finds half a site; a folder that holds anything the marker
does not list is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench import __version__
from bench.matrix import Matrix
from bench.publish.across import history_parts, machines_page
from bench.publish.pages import index_page, index_row, published_index_row, published_page, sweep_page
from bench.publish.sweeps import Sweep, across_machines, same_machine
from bench.report.tables import Added

MARKER = ".pfcbench-site.json"
ASSETS = Path(__file__).parent / "assets"
ASSET_FILES = ("site.js", "site.css")
PLOTLY = "plotly.min.js"
LOCALHOST = "127.0.0.1"


class SiteError(ValueError):
    """An output folder that a site cannot be written to: one line naming it."""


@dataclass(frozen=True, kw_only=True)
class PublishedReport:
    """A matrix's published report (no run): the matrix under its published server, its figures as records."""

    matrix: Matrix
    records: dict[str, dict]
    added: tuple[Added, ...]
    source: str


def site_pages(sweeps: Sequence[Sweep], published: Sequence[PublishedReport], serve_line: str) -> dict[str, str]:
    """File name: HTML of every page of the site, the index first."""
    pages: dict[str, str] = {}
    rows = []
    across = {name: f"machines-{name}.html" for name in across_machines(list(sweeps))}
    runs = same_machine(list(sweeps))
    for number, sweep in enumerate(sweeps, start=1):
        name = f"sweep-{number}-{sweep.matrix.name}.html"
        page = sweep_page(sweep, across.get(sweep.matrix.name))
        history_parts(page, runs[(sweep.matrix.name, sweep.hardware)])
        pages[name] = page.html()
        rows.append(index_row(name, sweep))
    for matrix_name, group in across_machines(list(sweeps)).items():
        pages[across[matrix_name]] = machines_page(matrix_name, group).html()
    for report in published:
        name = f"published-{report.matrix.name}.html"
        pages[name] = published_page(report.matrix, report.records, report.added, report.source).html()
        rows.append(published_index_row(name, report.matrix, report.records))
    index = index_page(rows, {f"{name} across machines": href for name, href in across.items()}, serve_line)
    return {"index.html": index.html(), **pages}


def owned_files(out: Path) -> list[str] | None:
    """The files of a site pfcbench wrote at out (None where out does not exist, [] where it is an empty folder).

    SiteError where out is not a folder, or holds anything but a site pfcbench wrote there.
    """
    if not out.exists() and not out.is_symlink():
        return None
    if not out.is_dir():
        raise SiteError(f"{out}: not a folder; give a new or empty folder for the site")
    try:
        names = sorted(path.name for path in out.iterdir())
    except OSError as exc:
        raise SiteError(f"{out}: cannot be read: {exc.strerror or exc}") from None
    if not names:
        return []
    if MARKER not in names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise SiteError(
            f"{out}: holds files pfcbench publish did not write ({shown}); give a new or empty folder for the site"
        )
    try:
        listed = json.loads((out / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SiteError(f"{out}: its {MARKER} cannot be read; give a new or empty folder for the site") from None
    others = [name for name in names if name not in listed and name != MARKER]
    if others:
        raise SiteError(
            f"{out}: holds {', '.join(others[:3])}, which pfcbench publish did not write; move it or give another folder"
        )
    return names


def write_site(out: Path, pages: dict[str, str]) -> Path:
    """Write the pages and assets to out whole, replacing a site pfcbench wrote there; the index's path."""
    from plotly.offline import get_plotlyjs

    previous = owned_files(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
    except OSError as exc:
        raise SiteError(f"{out}: cannot write: {exc.strerror or exc}") from None
    files = {**pages, PLOTLY: get_plotlyjs(), **{name: (ASSETS / name).read_text() for name in ASSET_FILES}}
    marker = {"written_by": "pfcbench publish", "version": __version__, "files": sorted(files)}
    try:
        for name, text in {**files, MARKER: json.dumps(marker, indent=2) + "\n"}.items():
            (temp / name).write_text(text, encoding="utf-8")
        os.chmod(temp, 0o755)  # mkdtemp's folder is the user's alone; a site is for reading
        replace(temp, out, previous)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise SiteError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return out / "index.html"


def replace(temp: Path, out: Path, previous: list[str] | None) -> None:
    """Put the new site in out's place: out is absent, an empty folder, or a site pfcbench wrote."""
    if not previous:
        os.replace(temp, out)  # onto nothing or an empty folder
        return
    old = temp.with_suffix(".old")
    os.rename(out, old)
    os.rename(temp, out)
    # only the files the old site listed go; a file that came in since keeps the old folder, and the file
    for name in previous:
        with contextlib.suppress(OSError):
            (old / name).unlink()
    with contextlib.suppress(OSError):
        old.rmdir()


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site's folder without a line on stderr per request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def server(folder: Path, port: int) -> ThreadingHTTPServer:
    """An HTTP server of the folder on localhost only (port 0: any free port); serve_forever() serves it."""
    return ThreadingHTTPServer((LOCALHOST, port), functools.partial(QuietHandler, directory=str(folder)))
