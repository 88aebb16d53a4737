// pfcbench publish: sortable tables, the page's charts and the record behind each cell. No network: the
// data is in the page (script elements "records" and "figures"), plotly.js beside it.
"use strict";

function pageData(id) {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent) : null;
}

// A cell's sort key: the number of data-value where it is one, else its text; empty keys sort last.
function sortKey(row, column) {
  const cell = row.cells[column];
  const holder = cell && cell.querySelector("[data-value]");
  const text = holder ? holder.dataset.value : cell ? cell.textContent.trim() : "";
  const number = Number(text);
  return text === "" ? null : Number.isFinite(number) ? number : text;
}

// Numbers first (in the order asked), then texts and marks (Fail, NaN, ...), then empty cells, whichever the order.
function compareKeys(a, b, descending) {
  const kind = (key) => (key === null ? 2 : typeof key === "number" ? 0 : 1);
  if (kind(a) !== kind(b)) return kind(a) - kind(b);
  const order = a < b ? -1 : a > b ? 1 : 0;
  return descending ? -order : order;
}

function sortBy(table, header) {
  const column = Array.from(header.parentNode.children).indexOf(header);
  const descending = header.dataset.order !== "descending";
  for (const other of header.parentNode.children) delete other.dataset.order;
  header.dataset.order = descending ? "descending" : "ascending";
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => compareKeys(sortKey(a, column), sortKey(b, column), descending));
  for (const row of rows) body.appendChild(row);
}

function showRecord(records, number) {
  const record = records[number];
  if (record === undefined || record === null) return;
  document.getElementById("record-title").textContent = `Record of cell ${record.cell_id} (${record.status})`;
  document.getElementById("record-text").textContent = JSON.stringify(record, null, 2);
  document.getElementById("record-dialog").showModal();
}

document.addEventListener("DOMContentLoaded", () => {
  const records = pageData("records") || [];
  for (const table of document.querySelectorAll("table.sortable")) {
    for (const header of table.tHead.rows[0].cells) {
      if (header.textContent.trim() === "Record") continue;
      header.title = "Sort by this column";
      header.addEventListener("click", () => sortBy(table, header));
    }
  }
  for (const button of document.querySelectorAll("button.record")) {
    button.addEventListener("click", () => showRecord(records, Number(button.dataset.record)));
  }
  const figures = pageData("figures") || {};
  for (const [id, figure] of Object.entries(figures)) {
    const element = document.getElementById(id);
    Plotly.newPlot(element, figure.data, figure.layout, { displaylogo: false, responsive: true });
    element.on("plotly_click", (event) => {
      const point = event.points[0];
      if (point && point.customdata !== undefined && point.customdata !== null) showRecord(records, point.customdata);
    });
  }
});
