// The runs index (runs.json, kept by publish beside latest.json at the bucket's prefix), read
// when a page opens: the Runs page's tables and chart, the index page's "what changed".
// Under file:// browsers refuse fetch(), and a run's folder has no index: the pages keep
// what render wrote (this run alone) and say why. Text goes in with textContent only.
(function () {
  "use strict";
  var status = document.getElementById("runs-status") || document.getElementById("changes-summary");
  if (!status) { return; }
  var indexUrl = status.dataset.index;
  var thisRun = status.dataset.run;
  var METRICS = [["rmse", "RMSE", 4], ["mae", "MAE", 4], ["ndcg_at_10", "nDCG@10", 4], ["coverage_at_10", "Coverage@10", 4]];
  var SVG = "http://www.w3.org/2000/svg";

  function say(text) { status.textContent = text; }
  function number(value, digits) { return value === null || value === undefined ? "\u2013" : Number(value).toFixed(digits); }
  function percent(value) { return value === null || value === undefined ? "\u2013" : (100 * value).toFixed(1) + "%"; }
  function when(iso) { return iso ? iso.replace("T", " ").replace(/:\d\dZ$/, " UTC") : "unknown time"; }
  // A run's site, from this one's root (runs/THIS/site/): ../../OTHER/site/PAGE.
  function siteOf(runId, page) { return "../../" + encodeURIComponent(runId) + "/site/" + page; }
  function el(name, text, attrs) {
    var node = document.createElement(name);
    if (text !== undefined && text !== null) { node.textContent = text; }
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    return node;
  }
  function link(text, href) { return el("a", text, { href: href }); }

  if (location.protocol === "file:") {
    say(status.id === "runs-status" ?
      "Opened from a folder, this page shows this run only: the runs kept over time are listed where the site is published (publish keeps runs.json beside latest.json)." :
      "Opened from a folder: what changed since the previous run is shown where the site is published, since publish compares each run with the run before it.");
    return;
  }

  fetch(indexUrl, { cache: "no-cache" }).then(function (answer) {
    if (!answer.ok) { throw new Error("HTTP " + answer.status); }
    return answer.json();
  }).then(function (index) {
    var runs = (index && index.runs) || [];
    var ours = runs.filter(function (run) { return run.run_id === thisRun; })[0];
    if (document.getElementById("runs-table")) { fillRunsPage(runs, ours); }
    if (status.id === "changes-summary") { fillChanges(ours); }
  }).catch(function (error) {
    say("No runs index could be read at " + indexUrl + " (" + error.message + "): this page shows this run only.");
  });

  function changesText(changes) {
    if (!changes) { return "This is the first run kept here: there is no previous run to compare with."; }
    if (changes.reason) { return "Against run " + changes.previous_run + ": " + changes.reason + "."; }
    return "Against run " + changes.previous_run + " (" + when(changes.previous_created_at) + "): " +
      percent(changes.share_changed) + " of users (" + changes.users_changed.toLocaleString("en") + " of " +
      changes.users_compared.toLocaleString("en") + ") have a changed top 10; the mean overlap@10 is " +
      number(changes.mean_overlap, 3) + "; " + changes.new_movies.toLocaleString("en") +
      " movie" + (changes.new_movies === 1 ? " is" : "s are") + " new to any top 10.";
  }

  function newMovies(changes) {
    var list = el("ul", null, { class: "chips new-movies", "aria-label": "Movies new to any top 10" });
    (changes && changes.new_movie_examples || []).forEach(function (movie) {
      var item = el("li");
      item.appendChild(link(movie.title, "movies/" + movie.movie_id + ".html"));
      item.appendChild(el("span", " (" + movie.users + " user" + (movie.users === 1 ? "" : "s") + ")", { class: "muted" }));
      list.appendChild(item);
    });
    return list;
  }

  function fillChanges(ours) {
    if (!ours) { say("This run is not in the runs index (" + indexUrl + "): it was removed by --keep-runs, or published before the index existed."); return; }
    say(changesText(ours.changes));
    if (ours.changes && ours.changes.new_movie_examples && ours.changes.new_movie_examples.length) {
      status.parentNode.appendChild(el("p", "New to any top 10, by the number of users they are recommended to:"));
      status.parentNode.appendChild(newMovies(ours.changes));
    }
  }

  function runCell(run, page) {
    var cell = el("th", null, { scope: "row" });
    var to = link(when(run.created_at), run.run_id === thisRun ? page : siteOf(run.run_id, page));
    to.className = "nowrap";
    cell.appendChild(to);
    cell.appendChild(el("br"));
    cell.appendChild(el("code", run.run_id, { class: "small" }));
    if (run.run_id === thisRun) {
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(el("span", "this run", { class: "tag tag-ours" }));
    }
    return cell;
  }

  function fillRunsPage(runs, ours) {
    var newest = runs.slice().reverse();
    var body = document.querySelector("#runs-table tbody");
    body.textContent = "";
    newest.forEach(function (run) {
      var row = el("tr", null, run.run_id === thisRun ? { class: "ours" } : {});
      row.appendChild(runCell(run, "index.html"));
      row.appendChild(el("td", run.dataset, { class: "text" }));
      row.appendChild(el("td", run.preset, { class: "text" }));
      METRICS.forEach(function (metric) { row.appendChild(el("td", number(run[metric[0]], metric[2]))); });
      body.appendChild(row);
    });
    var changes = document.querySelector("#changes-table tbody");
    changes.textContent = "";
    newest.forEach(function (run) {
      var row = el("tr", null, run.run_id === thisRun ? { class: "ours" } : {});
      row.appendChild(runCell(run, "runs.html"));
      var c = run.changes;
      if (!c || c.reason) {
        row.appendChild(el("td", c ? c.previous_run + ": " + c.reason : "the first run kept: nothing to compare", { colspan: "4", class: "text" }));
      } else {
        row.appendChild(el("td", when(c.previous_created_at)));
        row.appendChild(el("td", percent(c.share_changed) + " (" + c.users_changed.toLocaleString("en") + " of " + c.users_compared.toLocaleString("en") + ")"));
        row.appendChild(el("td", number(c.mean_overlap, 3)));
        row.appendChild(el("td", c.new_movies.toLocaleString("en")));
      }
      changes.appendChild(row);
    });
    drawChart(runs);
    say(runs.length + " run" + (runs.length === 1 ? "" : "s") + " kept where this site is published" +
      (ours ? "." : "; this run is not among them (removed by --keep-runs, or published before the index existed)."));
  }

  // One small line chart per metric: each has its own scale, so a small change shows.
  function drawChart(runs) {
    var box = document.getElementById("runs-chart");
    box.textContent = "";
    METRICS.forEach(function (metric) {
      var points = runs.map(function (run, i) { return { i: i, v: run[metric[0]], ours: run.run_id === thisRun }; })
        .filter(function (p) { return typeof p.v === "number"; });
      var W = 280, H = 170, left = 58, right = 12, top = 28, bottom = 30;
      var values = points.map(function (p) { return p.v; });
      var low = Math.min.apply(null, values), high = Math.max.apply(null, values);
      if (!points.length) { low = 0; high = 1; }
      if (high - low < 1e-9) { var pad = Math.abs(high) * 0.05 || 0.01; low -= pad; high += pad; }
      var n = Math.max(runs.length - 1, 1);
      function x(i) { return runs.length === 1 ? left + (W - left - right) / 2 : left + (W - left - right) * i / n; }
      function y(v) { return top + (H - top - bottom) * (high - v) / (high - low); }
      var described = metric[1] + " over " + runs.length + " run" + (runs.length === 1 ? "" : "s") + ", oldest first: " +
        (points.length ? points.map(function (p) { return number(p.v, metric[2]); }).join(", ") : "no values");
      var svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 " + W + " " + H);
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", described);
      function add(name, attrs, text) {
        var node = document.createElementNS(SVG, name);
        Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
        if (text !== undefined) { node.textContent = text; }
        svg.appendChild(node);
        return node;
      }
      add("text", { x: 4, y: 16, class: "runs-chart-title" }, metric[1]);
      add("line", { x1: left, y1: top, x2: left, y2: H - bottom, class: "axis" });
      add("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "axis" });
      [high, low].forEach(function (v) {
        add("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, number(v, metric[2]));
      });
      add("text", { x: left, y: H - 10, "text-anchor": "start" }, "oldest");
      add("text", { x: W - right, y: H - 10, "text-anchor": "end" }, "newest");
      if (points.length > 1) {
        add("polyline", { points: points.map(function (p) { return x(p.i) + "," + y(p.v); }).join(" "), class: "line" });
      }
      points.forEach(function (p) {
        add("circle", { cx: x(p.i), cy: y(p.v), r: p.ours ? 6 : 4, class: p.ours ? "point ours" : "point" });
      });
      var figure = el("figure", null, { class: "runs-panel" });
      figure.appendChild(svg);
      box.appendChild(figure);
    });
  }
}());
