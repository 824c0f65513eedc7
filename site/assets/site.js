// Sorting and filtering of the leaderboard tables; everything works without it (rows are pre-ranked).
"use strict";
(function () {
  // The numeric value of a cell (data-v), or null when it has none: missing values always sort last.
  function value(cell) {
    if (!cell) return null;
    if (cell.hasAttribute("data-v")) {
      var s = cell.getAttribute("data-v");
      return s === "" ? null : parseFloat(s);
    }
    return cell.textContent.trim().toLowerCase();
  }

  function sortBy(table, index, th) {
    var tbody = table.tBodies[0];
    var current = th.getAttribute("aria-sort");
    // First click on a numeric column ranks high to low (accuracies), on a text column A to Z; rank # ascending.
    var numeric = tbody.rows.length && tbody.rows[0].cells[index] && tbody.rows[0].cells[index].hasAttribute("data-v");
    var button = th.querySelector("button");
    var name = button ? (button.getAttribute("data-name") || button.textContent.trim()) : "";
    var first = name === "rank" || !numeric ? "ascending" : "descending";
    var dir = current ? (current === "ascending" ? "descending" : "ascending") : first;
    var sign = dir === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(tbody.rows);
    var keyed = rows.map(function (row, i) { return [value(row.cells[index]), i, row]; });
    keyed.sort(function (a, b) {
      if (a[0] === null && b[0] === null) return a[1] - b[1];
      if (a[0] === null) return 1;
      if (b[0] === null) return -1;
      if (a[0] < b[0]) return -sign;
      if (a[0] > b[0]) return sign;
      return a[1] - b[1];
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k[2]); });
    tbody.appendChild(frag);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    // Screen readers hear the column's full name ("Δ vs control, ε 1/255"), not its short label ("Δ").
    var status = table.querySelector(".sort-status");
    if (status) status.textContent = "Sorted by " + name + ", " + dir;
  }

  function applyFilters() {
    var want = {};
    document.querySelectorAll("select[data-filter]").forEach(function (s) { want[s.getAttribute("data-filter")] = s.value; });
    document.querySelectorAll("table.board").forEach(function (table) {
      var shown = 0, total = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        if (!row.hasAttribute("data-arch")) return;
        total++;
        var ok = (!want.arch || row.getAttribute("data-arch") === want.arch) &&
                 (!want.family || row.getAttribute("data-family") === want.family) &&
                 (!want.sparsity || parseFloat(row.getAttribute("data-sparsity")) === parseFloat(want.sparsity));
        row.hidden = !ok;
        if (ok) shown++;
      });
      var note = table.querySelector(".shown");
      if (note && total) note.textContent = shown === total ? "" : "(" + shown + " of " + total + " rows shown)";
    });
    // Charts drawn for one architecture follow the architecture filter too.
    document.querySelectorAll("[data-chart-arch]").forEach(function (fig) {
      fig.hidden = !!want.arch && fig.getAttribute("data-chart-arch") !== want.arch;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.documentElement;
    root.classList.add("js");
    document.querySelectorAll("table.board").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
        var button = th.querySelector("button");
        if (button) button.addEventListener("click", function () { sortBy(table, index, th); });
      });
    });
    document.querySelectorAll("select[data-filter]").forEach(function (s) { s.addEventListener("change", applyFilters); });
    // The scroll cue shows only where a table is wider than its box.
    document.querySelectorAll(".scroll-cue").forEach(function (cue) {
      var wrap = cue.nextElementSibling;
      if (wrap && wrap.scrollWidth <= wrap.clientWidth + 1) cue.hidden = true;
    });
    var toggle = document.querySelector("input[data-toggle='attack-cols']");
    if (toggle) {
      // Per-attack columns start folded where a toggle can unfold them; the worst case summarises them.
      root.classList.add("hide-attacks");
      toggle.checked = false;
      toggle.addEventListener("change", function () { root.classList.toggle("hide-attacks", !toggle.checked); });
    }
  });
})();
