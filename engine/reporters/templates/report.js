(function () {
  "use strict";
  var table = document.getElementById("findings");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);  // every row, rendered once by the server
  var ruleBox = document.getElementById("filter-rule");
  var severityBox = document.getElementById("filter-severity");
  var count = document.getElementById("finding-count");
  var total = rows.length;

  // One pass over the rows per change: O(n), rows are hidden, never rebuilt.
  function applyFilter() {
    var rule = ruleBox.value, severity = severityBox.value, shown = 0;
    for (var i = 0; i < total; i++) {
      var row = rows[i];
      var visible = (!rule || row.getAttribute("data-rule") === rule) &&
                    (!severity || row.getAttribute("data-severity") === severity);
      row.hidden = !visible;
      if (visible) { shown++; }
    }
    count.textContent = shown + " of " + total + " findings shown";
  }

  // Sort keys are read once per column (a cell's data-sort, else its text), then the rows are
  // sorted by index and moved in one fragment: O(n log n) per click.
  var keys = {};
  function keysFor(col, numeric) {
    if (!keys[col]) {
      keys[col] = rows.map(function (row) {
        var cell = row.cells[col];
        var key = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
        return numeric ? Number(key) : key;
      });
    }
    return keys[col];
  }
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(col) {
    var header = headers[col];
    var descending = header.getAttribute("aria-sort") === "ascending";
    var numeric = header.getAttribute("data-type") === "number";
    var key = keysFor(col, numeric);
    var order = rows.map(function (_, i) { return i; });
    order.sort(function (a, b) {
      var cmp = key[a] < key[b] ? -1 : key[a] > key[b] ? 1 : a - b;  // stable: ties keep order
      return descending ? -cmp : cmp;
    });
    var fragment = document.createDocumentFragment();
    var sorted = order.map(function (i) { return rows[i]; });
    var sortedKeys = {};
    Object.keys(keys).forEach(function (c) { sortedKeys[c] = order.map(function (i) { return keys[c][i]; }); });
    sorted.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
    rows = sorted;
    keys = sortedKeys;
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  headers.forEach(function (header, col) {
    header.addEventListener("click", function () { sortBy(col); });
  });
  ruleBox.addEventListener("change", applyFilter);
  severityBox.addEventListener("change", applyFilter);
  applyFilter();
})();
