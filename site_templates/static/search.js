// Search without a server, from a folder (file://) or a bucket alike: every index file is a
// small script that calls back into this one, loaded by a <script> tag, because Chromium
// refuses fetch() of local files.
//
// By user id: the id picks a shard (search/users-<id % n>.js -> movielensUserShard).
// By title: MiniSearch (static/vendor/minisearch.min.js, loaded on the first query) searches
// the titles of one shard: search/titles.js lists the shards (the first two letters of a
// word, case and accents folded) and their sizes; a query loads the smallest shard among
// its words (search/titles-<key>.js -> movielensTitleShard). Every word of the query must
// match, so every match is in that shard. (A title's year makes no shard: number words
// choose last.) job/site/search.py writes the shards with the same
// folding and word splitting as below.
(function () {
  "use strict";

  var LIMIT = 8;  // results shown
  // MiniSearch's own word separators (spaces, punctuation) and symbols too, so that
  // "<script>alert" or "M+M" are two words
  var SEPARATORS = /[\n\r\p{Z}\p{P}\p{S}]+/u;

  function fold(term) {
    return term.normalize("NFKD").replace(/\p{Mn}/gu, "").toLowerCase();
  }
  function words(text) {
    return text.split(SEPARATORS).map(fold).filter(Boolean);
  }
  function shardKey(word) { return Array.from(word).slice(0, 2).join(""); }
  function shardFile(key) {
    if (/^[a-z0-9]+$/.test(key)) { return "titles-" + key + ".js"; }
    var hex = Array.from(new TextEncoder().encode(key), function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
    return "titles-x" + hex + ".js";
  }

  // Scripts, each loaded once; a promise per file.
  var loading = {};
  function load(src) {
    if (!loading[src]) {
      loading[src] = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = src;
        script.async = true;
        script.onload = function () { resolve(); };
        script.onerror = function () {
          delete loading[src];
          script.remove();
          reject(new Error("could not load " + src));
        };
        document.head.appendChild(script);
      });
    }
    return loading[src];
  }

  var userShards = {};      // shard number -> Map(id -> n_ratings)
  var titleShardSizes = null;  // key -> titles in the shard
  var titleShards = {};     // key -> [[id, title, n_ratings], ...]
  var indexes = {};         // key -> MiniSearch over that shard

  window.movielensUserShard = function (number, users) {
    var found = new Map();
    users.forEach(function (user) { found.set(user[0], user[1]); });
    userShards[number] = found;
  };
  window.movielensTitleShards = function (sizes) { titleShardSizes = sizes; };
  window.movielensTitleShard = function (key, rows) { titleShards[key] = rows; };

  function findUser(root, shards, id) {
    var number = id % shards;
    return load(root + "search/users-" + number + ".js").then(function () {
      var users = userShards[number];
      return users && users.has(id) ? { id: id, n_ratings: users.get(id) } : null;
    });
  }

  function index(key) {
    if (!indexes[key]) {
      var search = new window.MiniSearch({
        fields: ["title"],
        storeFields: ["title", "n"],
        tokenize: function (text) { return text.split(SEPARATORS); },
        processTerm: function (term) { return fold(term) || null; }
      });
      search.addAll(titleShards[key].map(function (row) {
        return { id: row[0], title: row[1], n: row[2] };
      }));
      indexes[key] = search;
    }
    return indexes[key];
  }

  // The titles matching every word of ``text``; ``typing``: the last word may be unfinished.
  function findTitles(root, text, typing) {
    var terms = words(text);
    if (!terms.length) { return Promise.resolve({ movies: [], tooShort: false }); }
    return Promise.all([
      load(root + "static/vendor/minisearch.min.js"),
      load(root + "search/titles.js")
    ]).then(function () {
      // A one-letter word still being typed has no shard of its own: its shard holds the
      // titles with that one-letter word, not those with longer words starting with it.
      var usable = terms.filter(function (term, i) {
        return !(typing && i === terms.length - 1 && Array.from(term).length < 2);
      });
      if (!usable.length) { return { movies: [], tooShort: true }; }
      // Number words only when there is nothing else: a title's year makes no shard, so
      // "heat 1995" must read shard "he" (MiniSearch then checks the year).
      var words = usable.filter(function (term) { return !/^\d+$/.test(term); });
      var key = null;
      (words.length ? words : usable).forEach(function (term) {
        var candidate = shardKey(term);
        var size = titleShardSizes[candidate] || 0;
        if (key === null || size < (titleShardSizes[key] || 0)) { key = candidate; }
      });
      if (!titleShardSizes[key]) { return { movies: [], tooShort: false }; }  // no such word
      return load(root + "search/" + shardFile(key)).then(function () {
        var found = index(key).search(text, {
          combineWith: "AND",
          prefix: function (term, i, all) { return typing && i === all.length - 1; },
          fuzzy: function (term) { return term.length > 4 ? 0.2 : false; },
          // the better known of two equal matches first ("Die Hard" before "Die Hard 2")
          boostDocument: function (id, term, stored) {
            return 1 + Math.log10(1 + (stored ? stored.n : 0)) / 4;
          }
        });
        return { movies: found.slice(0, LIMIT), total: found.length, tooShort: false };
      });
    });
  }

  // Users and titles for ``text``: {user, movies, total, tooShort}.
  function find(root, shards, text, typing) {
    var id = text.trim().replace(/^#/, "");
    var user = /^\d+$/.test(id) && Number.isSafeInteger(Number(id)) ?
      findUser(root, shards, Number(id)) : Promise.resolve(null);
    return Promise.all([user, findTitles(root, text, typing)]).then(function (both) {
      var titles = both[1];
      return { user: both[0], movies: titles.movies, total: titles.total || 0, tooShort: titles.tooShort };
    });
  }

  window.MovielensSearch = { find: find, findTitles: findTitles, load: load, fold: fold, words: words, shardKey: shardKey, shardFile: shardFile };

  // ---------------------------------------------------------------------------------------
  // The search boxes: results as a list of links under the box; Enter opens the first one,
  // the arrow keys move through them, Escape goes back to the box.

  function attach(form) {
    var input = form.querySelector("input[type=search]");
    var status = form.querySelector(".search-status");
    var list = form.querySelector(".search-results");
    var root = form.getAttribute("data-root") || "";
    var shards = Number(form.getAttribute("data-shards")) || 1;
    var range = form.getAttribute("data-min-id") + " to " + form.getAttribute("data-max-id");
    var asked = 0;  // the latest query: answers to older ones are dropped
    var timer = null;

    function say(message) { status.textContent = message; }
    function links() { return Array.prototype.slice.call(list.querySelectorAll("a")); }
    function close() { list.hidden = true; list.textContent = ""; list.removeAttribute("data-for"); }

    function show(result, text) {
      // Someone arrowing through an earlier answer keeps their place when the latest one
      // replaces it: the same movie if it is still listed, else the same position.
      var focusedAt = links().indexOf(document.activeElement);
      var focusedHref = focusedAt >= 0 ? document.activeElement.getAttribute("href") : null;
      list.textContent = "";
      // Which query the list answers (the tests wait for the answer to the whole query).
      list.setAttribute("data-for", text);
      var items = [];
      if (result.user) {
        items.push({ href: root + "users/" + result.user.id + ".html", label: "User #" + result.user.id,
                     note: result.user.n_ratings + " ratings" });
      }
      result.movies.forEach(function (movie) {
        items.push({ href: root + "movies/" + movie.id + ".html", label: movie.title,
                     note: movie.n + (movie.n === 1 ? " rating" : " ratings") });
      });
      items.forEach(function (item) {
        var li = document.createElement("li");
        var a = document.createElement("a");
        a.href = item.href;
        a.textContent = item.label;
        var note = document.createElement("span");
        note.className = "muted";
        note.textContent = " " + item.note;
        li.appendChild(a);
        li.appendChild(note);
        list.appendChild(li);
      });
      list.hidden = items.length === 0;
      if (focusedAt >= 0) {
        var now = links();
        var same = now.filter(function (a) { return a.getAttribute("href") === focusedHref; })[0];
        (same || now[Math.min(focusedAt, now.length - 1)] || input).focus();
      }
      var numeric = /^#?\d+$/.test(text.trim());
      if (items.length) {
        var shown = result.total > result.movies.length ? " (first " + result.movies.length + " shown)" : "";
        var parts = [];
        if (result.user) { parts.push("user #" + result.user.id); }
        if (result.total) { parts.push(result.total + (result.total === 1 ? " movie" : " movies") + shown); }
        say("Found " + parts.join(" and ") + ". Press Enter for the first, or the down arrow to choose.");
      } else if (result.tooShort) {
        say("Keep typing: two letters at least.");
      } else if (numeric) {
        say("No user " + text.trim().replace(/^#/, "") + " in this run (ids go from " + range + "), and no title matches.");
      } else {
        say("No title matches \u201c" + text.trim() + "\u201d.");
      }
      return items;
    }

    function run(typing) {
      var text = input.value;
      var mine = ++asked;
      if (!text.trim()) { close(); say(""); return Promise.resolve([]); }
      return find(root, shards, text, typing).then(function (result) {
        return mine === asked ? show(result, text) : null;
      }, function () {
        if (mine === asked) { say("The search index could not be loaded."); }
        return null;
      });
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { run(true); }, 120);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "ArrowDown" && links().length) {
        event.preventDefault();
        links()[0].focus();
      } else if (event.key === "Escape") {
        close();
      }
    });
    list.addEventListener("keydown", function (event) {
      var all = links();
      var at = all.indexOf(document.activeElement);
      if (event.key === "ArrowDown" && at < all.length - 1) {
        event.preventDefault();
        all[at + 1].focus();
      } else if (event.key === "ArrowUp") {
        event.preventDefault();
        if (at > 0) { all[at - 1].focus(); } else { input.focus(); }
      } else if (event.key === "Escape") {
        event.preventDefault();
        close();
        input.focus();
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearTimeout(timer);
      run(false).then(function (items) {
        if (items && items.length) {
          window.location.href = items[0].href;
        } else {
          input.focus();
        }
      });
    });
  }

  document.querySelectorAll("form.site-search").forEach(attach);
})();
