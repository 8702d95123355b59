(function () {
  "use strict";
  var table = document.getElementById("findings");
  var data = document.getElementById("findings-data");
  if (!table || !data) { return; }
  // The findings are data, not markup: a JSON array of rows (a column list per finding, see
  // COLUMNS in html_report.py) parsed once; cells are filled with textContent only, so no
  // value can become an element or run. Only one page of rows is in the document at a time:
  // a page of 100,000 table rows takes a browser many seconds to lay out, a page of 200 does not.
  var findings = JSON.parse(data.textContent);
  var total = findings.length;
  var PAGE = 200;
  // Row fields: 0 rank, 1 severity, 2 rule, 3 outcome, 4 record, 5 patient, 6 time, 7 time sort key,
  // 8 message, 9 evidence, 10 source, 11 source sort key.
  var SEVERITY = 1, RULE = 2;
  // Per table column: the field shown, the field it sorts by, its cell class.
  var columns = [
    {show: 1, sort: 0, cls: "nowrap"}, {show: 2, sort: 2, cls: "nowrap"}, {show: 3, sort: 3, cls: ""},
    {show: 4, sort: 4, cls: "mono nowrap"}, {show: 5, sort: 5, cls: "mono nowrap"},
    {show: 6, sort: 7, cls: "nowrap"}, {show: 8, sort: 8, cls: "msg"}, {show: 9, sort: 9, cls: "evidence mono"},
    {show: 10, sort: 11, cls: "mono src"}
  ];
  var body = table.tBodies[0];
  var ruleBox = document.getElementById("filter-rule");
  var severityBox = document.getElementById("filter-severity");
  var count = document.getElementById("finding-count");
  var more = document.getElementById("show-more");
  var all = document.getElementById("show-all");
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  var order = findings.map(function (_, i) { return i; });  // every finding, in the current sort order
  var matching = order;  // those the filters let through, in that order
  var limit = PAGE;

  function filter() {
    var rule = ruleBox.value, severity = severityBox.value;
    matching = order.filter(function (i) {
      var f = findings[i];
      return (!rule || f[RULE] === rule) && (!severity || f[SEVERITY] === severity);
    });
  }

  function row(f) {
    var tr = document.createElement("tr");
    tr.className = "finding";
    tr.setAttribute("data-rule", f[RULE]);
    tr.setAttribute("data-severity", f[SEVERITY]);
    columns.forEach(function (column, c) {
      var td = document.createElement("td");
      td.className = column.cls + (c === 0 ? " sev-" + f[SEVERITY] : "");
      td.textContent = f[column.show];
      tr.appendChild(td);
    });
    return tr;
  }

  function show() {
    var shown = Math.min(limit, matching.length);
    var fragment = document.createDocumentFragment();
    for (var k = 0; k < shown; k++) { fragment.appendChild(row(findings[matching[k]])); }
    body.replaceChildren(fragment);
    count.textContent = matching.length + " of " + total + " findings match; " + shown + " shown";
    var rest = matching.length - shown;
    more.hidden = all.hidden = rest <= 0;
    more.textContent = "Show " + Math.min(PAGE, rest) + " more";
    all.textContent = "Show all " + matching.length;
  }

  function sortBy(col) {
    var header = headers[col];
    var descending = header.getAttribute("aria-sort") === "ascending";
    var field = columns[col].sort;
    order = order.slice().sort(function (a, b) {
      var x = findings[a][field], y = findings[b][field];
      var cmp = x < y ? -1 : x > y ? 1 : 0;
      return (descending ? -cmp : cmp) || a - b;  // ties keep the report's order
    });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    filter();
    show();
  }

  headers.forEach(function (header, col) {
    header.querySelector("button").addEventListener("click", function () { sortBy(col); });
  });
  [ruleBox, severityBox].forEach(function (box) {
    box.addEventListener("change", function () { limit = PAGE; filter(); show(); });
  });
  more.addEventListener("click", function () { limit += PAGE; show(); });
  all.addEventListener("click", function () { limit = matching.length; show(); });
  filter();
  show();
})();
