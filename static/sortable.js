// Sortable tables: click a column head of a table.sortable to sort by it; click again to
// reverse. Cells sort by their data-sort value when they have one (numbers), else by text.
// No dependencies; loaded with <script src defer>, so it works under the strict CSP.
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("thead th").forEach((th, col) => {
    th.style.cursor = "pointer";
    th.title = "sort";
    th.addEventListener("click", () => {
      const body = table.tBodies[0];
      const asc = th.dataset.dir !== "asc";
      table.querySelectorAll("thead th").forEach((h) => delete h.dataset.dir);
      th.dataset.dir = asc ? "asc" : "desc";
      const key = (row) => {
        const cell = row.cells[col];
        if (!cell) return "";
        const v = cell.dataset.sort ?? cell.textContent.trim();
        const n = parseFloat(v);
        return v !== "" && !isNaN(n) && cell.dataset.sort !== undefined ? n : v.toLowerCase();
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const [x, y] = [key(a), key(b)];
        const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach((r) => body.appendChild(r));
    });
  });
});
