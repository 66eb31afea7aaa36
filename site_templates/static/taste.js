// "Start from your taste": the visitor's picks in, ten recommendations out, all in the page.
// Each movie's neighbours come from taste/nb-<id % n>.js (movielensNeighbours); a movie's
// score is the sum of its scores as a neighbour of each pick, as job/site/taste.py's
// recommend() computes it. The picks live in the address (?picks=1,2,3), so a page can link
// here with a movie already picked and a visitor can keep or share their list.
(function () {
  "use strict";

  var page = document.getElementById("taste");
  if (!page) { return; }
  var root = page.getAttribute("data-root") || "";
  var nShards = Number(page.getAttribute("data-shards")) || 1;
  var K = 10;
  var fill = JSON.parse(document.getElementById("taste-fill").textContent);  // [[id, title]]

  var neighbours = {};  // movie id -> [[other, score], ...]
  var titles = {};      // movie id -> title
  fill.forEach(function (row) { titles[row[0]] = row[1]; });
  window.movielensNeighbours = function (number, found, named) {
    Object.keys(found).forEach(function (id) { neighbours[id] = found[id]; });
    Object.keys(named).forEach(function (id) { titles[id] = named[id]; });
  };

  var picks = [];  // movie ids, in the order picked
  var pickList = document.getElementById("taste-picks");
  var results = document.getElementById("taste-results");
  var status = document.getElementById("taste-status");
  var clear = document.getElementById("taste-clear");

  function shardOf(id) { return root + "taste/nb-" + (id % nShards) + ".js"; }

  function recommend(chosen) {
    var skip = new Set(chosen);
    var scores = new Map();
    var because = new Map();
    chosen.forEach(function (pick) {
      (neighbours[pick] || []).forEach(function (pair) {
        var other = pair[0];
        var score = pair[1];
        if (skip.has(other)) { return; }
        scores.set(other, (scores.get(other) || 0) + score);
        var best = because.get(other);
        if (!best || score > best[1]) { because.set(other, [pick, score]); }
      });
    });
    var ranked = Array.from(scores.entries()).sort(function (a, b) {
      return b[1] - a[1] || a[0] - b[0];
    }).slice(0, K).map(function (entry) {
      return { id: entry[0], score: entry[1], because: because.get(entry[0])[0] };
    });
    // Too few neighbours (picks the data knows little about): popular movies fill the list.
    fill.forEach(function (row) {
      if (ranked.length < K && !skip.has(row[0]) &&
          !ranked.some(function (r) { return r.id === row[0]; })) {
        ranked.push({ id: row[0], score: null, because: null });
      }
    });
    return ranked;
  }

  function link(id) {
    var a = document.createElement("a");
    a.href = root + "movies/" + id + ".html";
    a.textContent = titles[id] || ("Movie " + id);
    return a;
  }

  function showPicks() {
    pickList.textContent = "";
    picks.forEach(function (id) {
      var li = document.createElement("li");
      li.appendChild(link(id));
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link-button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + (titles[id] || id));
      remove.addEventListener("click", function () { toggle(id, false); });
      li.appendChild(document.createTextNode(" "));
      li.appendChild(remove);
      pickList.appendChild(li);
    });
    document.getElementById("taste-no-picks").hidden = picks.length > 0;
    clear.hidden = picks.length === 0;
    document.querySelectorAll("input.taste-pick").forEach(function (box) {
      box.checked = picks.indexOf(Number(box.value)) >= 0;
    });
  }

  var asked = 0;
  function update() {
    var mine = ++asked;
    var chosen = picks.slice();
    history.replaceState(null, "", chosen.length ? "?picks=" + chosen.join(",") : "?");
    showPicks();
    if (!chosen.length) {
      results.textContent = "";
      status.textContent = "Pick a movie or more to see recommendations.";
      return Promise.resolve();
    }
    status.textContent = "Finding movies…";
    var files = Array.from(new Set(chosen.map(shardOf)));
    return Promise.all(files.map(window.MovielensSearch.load)).then(function () {
      if (mine !== asked) { return; }
      // Every movie of the catalogue is in its shard: an id that is not (a stale address) goes.
      picks = picks.filter(function (id) { return neighbours[id] !== undefined; });
      chosen = chosen.filter(function (id) { return neighbours[id] !== undefined; });
      history.replaceState(null, "", chosen.length ? "?picks=" + chosen.join(",") : "?");
      showPicks();  // titles of picks made from the address are known now
      if (!chosen.length) {
        results.textContent = "";
        status.textContent = "Pick a movie or more to see recommendations.";
        return;
      }
      var found = recommend(chosen);
      results.textContent = "";
      found.forEach(function (item) {
        var li = document.createElement("li");
        li.setAttribute("data-movie", item.id);
        li.appendChild(link(item.id));
        var why = document.createElement("span");
        why.className = "muted why";
        why.textContent = item.because !== null ?
          " because you picked " + (titles[item.because] || item.because) :
          " popular with everyone";
        li.appendChild(why);
        results.appendChild(li);
      });
      var n = chosen.length;
      status.textContent = found.length + " recommendations from your " + n +
        (n === 1 ? " pick." : " picks.");
    }, function () {
      if (mine === asked) { status.textContent = "The neighbours could not be loaded."; }
    });
  }

  function toggle(id, on) {
    var at = picks.indexOf(id);
    if (on && at < 0) { picks.push(id); }
    if (!on && at >= 0) { picks.splice(at, 1); }
    return update();
  }

  // The checklist of popular picks.
  document.querySelectorAll("input.taste-pick").forEach(function (box) {
    box.addEventListener("change", function () { toggle(Number(box.value), box.checked); });
  });
  clear.addEventListener("click", function () { picks = []; update(); });

  // The title search: each match gets an "Add" button.
  var form = document.getElementById("taste-search");
  var input = form.querySelector("input[type=search]");
  var found = document.getElementById("taste-found");
  var foundStatus = document.getElementById("taste-found-status");
  var timer = null;
  var searched = 0;
  function search(typing) {
    var mine = ++searched;
    var text = input.value;
    if (!text.trim()) { found.textContent = ""; foundStatus.textContent = ""; return; }
    window.MovielensSearch.findTitles(root, text, typing).then(function (result) {
      if (mine !== searched) { return; }
      found.textContent = "";
      result.movies.forEach(function (movie) {
        titles[movie.id] = movie.title;
        var li = document.createElement("li");
        var add = document.createElement("button");
        add.type = "button";
        add.textContent = "Add";
        add.setAttribute("aria-label", "Add " + movie.title);
        add.addEventListener("click", function () {
          toggle(movie.id, true);
          add.disabled = true;
          input.focus();
        });
        add.disabled = picks.indexOf(movie.id) >= 0;
        li.appendChild(add);
        li.appendChild(document.createTextNode(" " + movie.title));
        found.appendChild(li);
      });
      foundStatus.textContent = result.movies.length ?
        result.total + (result.total === 1 ? " movie matches." : " movies match.") :
        (result.tooShort ? "Keep typing: two letters at least." : "No title matches.");
    }, function () {
      if (mine === searched) { foundStatus.textContent = "The search index could not be loaded."; }
    });
  }
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { search(true); }, 120);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(timer);
    search(false);
  });

  // Picks from the address: taste.html?picks=1,2,3 (a movie page's "start from this movie").
  var match = /picks=([\d,]+)/.exec(window.location.search);
  if (match) {
    match[1].split(",").forEach(function (id) {
      var n = Number(id);
      if (id && Number.isSafeInteger(n) && picks.indexOf(n) < 0) { picks.push(n); }
    });
  }
  page.classList.add("ready");
  update();
})();
