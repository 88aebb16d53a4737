"""A page of a published site in headless Chromium (Debian's, driven by Playwright; no browser is downloaded),
with every request it makes and every error it logs, and what a user sees of its tables and charts."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, sync_playwright


@dataclass
class Seen:
    """What the page did while it was open."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def chromium() -> str:
    """The system's Chromium; a test that needs it fails where it is missing (.ci/run installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium on PATH: apt-get install chromium (.ci/run installs it when missing)"
    return path


@contextlib.contextmanager
def opened(page_path: Path) -> Iterator[tuple[Page, Seen]]:
    """The page opened from the file system, its charts drawn."""
    seen = Seen()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: seen.requests.append(request.url))
            page.on("console", lambda message: seen.errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: seen.errors.append(str(error)))
            page.goto(page_path.as_uri())
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.chart')).every(c => c.querySelector('.main-svg'))"
            )
            yield page, seen
        finally:
            browser.close()


def tables(page: Page, header: str) -> list[list[list[str]]]:
    """The page's tables with a column of that header, as rows of cell texts (header row first)."""
    found = page.eval_on_selector_all(
        "table", "ts => ts.map(t => Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText.trim())))"
    )
    return [table for table in found if header in table[0]]


def column(table: list[list[str]], header: str) -> list[str]:
    return [row[table[0].index(header)] for row in table[1:]]


def chart_marks(page: Page, chart_id: str) -> tuple[int, int]:
    """How many cells a chart marks: by its data (traces of cells), and as drawn (SVG points)."""
    in_data = page.evaluate(
        f"""() => document.getElementById('{chart_id}').data
            .filter(t => t.meta === 'cell').reduce((n, t) => n + t.y.length, 0)"""
    )
    drawn = page.locator(f"#{chart_id} .cartesianlayer .point").count()
    return in_data, drawn


def left_the_file_system(seen: Seen) -> list[str]:
    """The requests that left the file system (none, on a page that works offline)."""
    return [url for url in seen.requests if not url.startswith("file://")]


def hover_text(page: Page, chart_id: str) -> str:
    """What the chart shows with the mouse over its first mark (plotly listens on a layer above the marks)."""
    mark = page.locator(f"#{chart_id} .cartesianlayer .point").first
    mark.scroll_into_view_if_needed()
    box = mark.bounding_box()
    page.mouse.move(box["x"] + 1, box["y"] + 1)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    hover = page.locator(f"#{chart_id} .hoverlayer .hovertext")
    hover.first.wait_for()
    return hover.first.text_content() or ""
