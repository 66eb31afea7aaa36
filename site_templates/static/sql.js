// The SQL page: read-only SQL in the browser with DuckDB-Wasm, over http(s) only.
//
// A classic script, not a module: under file:// Chromium refuses module scripts, and this
// page must still explain itself there (and show the duckdb CLI command). Over http(s) it
// imports the engine's main-thread module (static/vendor/duckdb-browser-VERSION.mjs), starts
// its worker and wasm from the engine folder, registers the run's database by URL (DuckDB
// reads it by range requests) and attaches it READ_ONLY.
(function () {
  "use strict";
  var root = document.getElementById("sql");
  if (!root) return;
  var form = document.getElementById("sql-form");
  var box = document.getElementById("sql-query");
  var status = document.getElementById("sql-status");
  var result = document.getElementById("sql-result");
  var csvButton = document.getElementById("sql-csv");
  var cli = document.getElementById("sql-cli");
  var cliBlock = document.getElementById("sql-cli-block");
  var runButton = document.getElementById("sql-run");
  var MAX_SHOWN = 1000; // rows drawn in the table; the CSV has them all
  var overHttp = location.protocol === "http:" || location.protocol === "https:";
  var missing = root.getAttribute("data-missing");
  var lastResult = null;

  // ------------------------------------------------------------------------------------
  // Reading the statement: one statement, and one that reads

  // The statement without comments and string contents, to find its first word and any
  // second statement. Quotes and comments are skipped as DuckDB's tokenizer skips them.
  function skeleton(sql) {
    var out = "";
    var i = 0;
    while (i < sql.length) {
      var c = sql[i];
      var next = sql[i + 1];
      if (c === "-" && next === "-") {
        var end = sql.indexOf("\n", i);
        i = end < 0 ? sql.length : end + 1;
        out += " ";
      } else if (c === "/" && next === "*") {
        var close = sql.indexOf("*/", i + 2);
        i = close < 0 ? sql.length : close + 2;
        out += " ";
      } else if (c === "'" || c === '"') {
        var j = i + 1;
        while (j < sql.length) {
          if (sql[j] === c && sql[j + 1] === c) j += 2; // an escaped quote
          else if (sql[j] === c) break;
          else j += 1;
        }
        out += c + c;
        i = j + 1;
      } else {
        out += c;
        i += 1;
      }
    }
    return out;
  }

  var READING = ["SELECT", "WITH", "FROM", "VALUES", "TABLE", "DESCRIBE", "SHOW", "SUMMARIZE", "EXPLAIN"];

  // null when the statement may run, else the one line that says why not.
  function refusal(sql) {
    var bare = skeleton(sql).trim().replace(/;\s*$/, "");
    if (!bare) return "Nothing to run: type a query.";
    if (bare.indexOf(";") >= 0) return "Refused: one statement at a time (remove everything after the first ';').";
    var first = (bare.match(/^[(\s]*([A-Za-z_]+)/) || [])[1] || "";
    if (READING.indexOf(first.toUpperCase()) < 0) {
      return "Refused: " + (first ? first.toUpperCase() : "this statement") +
        " would change something; this page only reads (" + READING.join(", ") + ").";
    }
    return null;
  }

  // DuckDB's messages point at the query with a "LINE 1: ... ^^^" block: the line the
  // page shows is what comes before it (with "Did you mean ...?" kept).
  function oneLine(text) {
    return String(text).split(/\n\s*LINE \d+:/)[0].split("\n")
      .map(function (s) { return s.trim(); }).filter(Boolean).join(" ");
  }

  function cliCommand(sql) {
    return "duckdb -readonly recommendations.duckdb '" + sql.trim().replace(/'/g, "'\\''") + "'";
  }

  // ------------------------------------------------------------------------------------
  // The engine, started once, on the first query

  var ready = null;

  function engineBase() {
    var folder = root.getAttribute("data-engine-folder") + "/";
    var site = new URL(".", location.href);
    // Published (job.publish): PREFIX/runs/RUN_ID/site/sql.html, and the engine once for
    // every run at PREFIX/engine/...; in a run's own folder: OUT/site and OUT/engine.
    var published = "/runs/" + root.getAttribute("data-run-id") + "/site/";
    var up = site.pathname.slice(-published.length) === published ? "../../../" : "../";
    return new URL(up + folder, site);
  }

  function start() {
    if (ready) return ready;
    ready = (async function () {
      var duckdb = await import(new URL(root.getAttribute("data-module"), location.href).href);
      var base = engineBase();
      var files = root.getAttribute("data-engine-files").split(" ");
      var wasm = new URL(files[0], base).href;
      var worker = new Worker(new URL(files[1], base).href);
      var db = new duckdb.AsyncDuckDB(new duckdb.ConsoleLogger(duckdb.LogLevel.WARNING), worker);
      await db.instantiate(wasm);
      // Range requests, sized by a HEAD first (S3 and CloudFront answer HEAD reliably).
      // All three are needed: with any left to its default DuckDB-Wasm 1.32.0 downloaded
      // the whole file before the first query (one 54 MB GET) or found no file at all.
      await db.open({
        filesystem: { reliableHeadRequests: true, allowFullHTTPReads: false, forceFullHTTPReads: false },
      });
      var data = new URL(root.getAttribute("data-database"), location.href).href;
      await db.registerFileURL("recommendations.duckdb", data, duckdb.DuckDBDataProtocol.HTTP, false);
      var conn = await db.connect();
      // No extension is ever fetched (from extensions.duckdb.org): the site is self-contained.
      await conn.query("SET autoinstall_known_extensions = false");
      await conn.query("SET autoload_known_extensions = false");
      await conn.query("ATTACH 'recommendations.duckdb' AS recommendations (READ_ONLY)");
      await conn.query("USE recommendations");
      await conn.query("SET lock_configuration = true");
      return conn;
    })();
    ready.catch(function () { ready = null; });
    return ready;
  }

  // ------------------------------------------------------------------------------------
  // Showing a result

  function text(value) {
    if (value === null || value === undefined) return "NULL";
    if (typeof value === "bigint") return value.toString();
    if (typeof value === "number") return String(value);
    if (value instanceof Date) return value.toISOString();
    if (typeof value === "object" && typeof value.toArray === "function") {
      return "[" + Array.from(value.toArray(), text).join(", ") + "]";
    }
    if (typeof value === "object") {
      return JSON.stringify(value, function (k, v) { return typeof v === "bigint" ? v.toString() : v; });
    }
    return String(value);
  }

  function toRows(table) {
    var names = table.schema.fields.map(function (f) { return f.name; });
    var rows = [];
    for (var r = 0; r < table.numRows; r++) {
      var row = table.get(r);
      rows.push(names.map(function (n) { return row === null ? null : row[n]; }));
    }
    return { names: names, types: table.schema.fields.map(function (f) { return String(f.type); }), rows: rows };
  }

  function draw(res) {
    var t = document.createElement("table");
    var head = t.createTHead().insertRow();
    res.names.forEach(function (name) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      head.appendChild(th);
    });
    var body = t.createTBody();
    res.rows.slice(0, MAX_SHOWN).forEach(function (row) {
      var tr = body.insertRow();
      row.forEach(function (value) {
        var td = tr.insertCell();
        td.textContent = text(value);
        if (typeof value === "number" || typeof value === "bigint") td.className = "num";
      });
    });
    result.replaceChildren(t);
    result.hidden = false;
  }

  function csvField(value) {
    var s = value === null || value === undefined ? "" : text(value);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function downloadCsv() {
    if (!lastResult) return;
    var lines = [lastResult.names.map(csvField).join(",")];
    lastResult.rows.forEach(function (row) { lines.push(row.map(csvField).join(",")); });
    var blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv;charset=utf-8" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "query.csv";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 0);
  }

  function fail(message) {
    status.textContent = oneLine(message);
    status.className = "sql-status sql-error";
    lastResult = null;
    csvButton.disabled = true;
    result.hidden = true;
    result.replaceChildren();
  }

  async function run() {
    var sql = box.value;
    cli.textContent = cliCommand(sql);
    if (!overHttp || missing) return;
    var why = refusal(sql);
    if (why) { fail(why); finished(); return; }
    runButton.disabled = true;
    status.className = "sql-status";
    status.textContent = ready ? "Running…" : "Loading the engine and running…";
    var started = performance.now();
    try {
      var conn = await start();
      var table = await conn.query(sql);
      var ms = performance.now() - started;
      lastResult = toRows(table);
      draw(lastResult);
      var n = lastResult.rows.length;
      status.textContent = n.toLocaleString("en") + (n === 1 ? " row" : " rows") + " in " +
        (ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(1) + " s") +
        (n > MAX_SHOWN ? " (the first " + MAX_SHOWN.toLocaleString("en") + " shown; the CSV has all)" : "") + ".";
      status.setAttribute("data-rows", String(n));
      status.setAttribute("data-ms", String(Math.round(ms)));
      csvButton.disabled = false;
    } catch (error) {
      fail("Error: " + (error && error.message ? error.message : error));
    } finally {
      runButton.disabled = false;
      finished();
    }
  }

  // How many queries the page has answered, failed or refused (for tests and tools).
  function finished() {
    root.setAttribute("data-runs", String(Number(root.getAttribute("data-runs") || 0) + 1));
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); run(); });
  box.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); run(); }
  });
  box.addEventListener("input", function () { cli.textContent = cliCommand(box.value); });
  csvButton.addEventListener("click", downloadCsv);
  Array.prototype.forEach.call(document.querySelectorAll(".sql-example"), function (button) {
    button.addEventListener("click", function () {
      box.value = button.getAttribute("data-sql");
      run();
    });
  });

  if (!overHttp) {
    document.getElementById("sql-file").hidden = false;
    cliBlock.hidden = false;
    runButton.disabled = true;
    status.textContent = "";
  } else if (missing) {
    runButton.disabled = true;
  }
  root.setAttribute("data-state", overHttp && !missing ? "ready" : "cli-only");
})();
