// User search without a server: the id picks a shard of the index (id % n_shards), the shard
// is a small script (search/users-<n>.js) that calls movielensUserShard(n, [[id, ratings], ...]).
// A <script> tag rather than fetch(), because Chromium refuses fetch() of local files when the
// site is opened from a folder (file://), and a script loads from a folder and a bucket alike.
(function () {
  "use strict";

  var shards = {};   // shard number -> Map(id -> n_ratings)
  var waiting = {};  // shard number -> callbacks waiting for it

  window.movielensUserShard = function (number, users) {
    var found = new Map();
    users.forEach(function (user) { found.set(user[0], user[1]); });
    shards[number] = found;
    (waiting[number] || []).forEach(function (callback) { callback.ok(found); });
    delete waiting[number];
  };

  function loadShard(root, number, callback) {
    if (shards[number]) { callback.ok(shards[number]); return; }
    if (waiting[number]) { waiting[number].push(callback); return; }
    waiting[number] = [callback];
    var script = document.createElement("script");
    script.src = root + "search/users-" + number + ".js";
    script.async = true;
    script.onerror = function () {
      (waiting[number] || []).forEach(function (cb) { cb.fail(); });
      delete waiting[number];
      script.remove();
    };
    document.head.appendChild(script);
  }

  function search(form) {
    var input = form.querySelector("input[name=user]");
    var status = form.querySelector(".search-status");
    var root = form.getAttribute("data-root") || "";
    var count = Number(form.getAttribute("data-shards")) || 1;
    var text = input.value.trim().replace(/^#/, "");
    function say(message) { status.textContent = message; }

    if (!/^\d+$/.test(text)) {
      say("Enter a user id: a whole number from " + form.getAttribute("data-min-id") +
          " to " + form.getAttribute("data-max-id") + ".");
      input.focus();
      return;
    }
    var id = Number(text);
    if (!Number.isSafeInteger(id)) { say("No user " + text + " in this run."); return; }
    say("Looking up user " + id + "…");
    loadShard(root, id % count, {
      ok: function (users) {
        if (users.has(id)) {
          window.location.href = root + "users/" + id + ".html";
        } else {
          say("No user " + id + " in this run. Ids go from " + form.getAttribute("data-min-id") +
              " to " + form.getAttribute("data-max-id") + ".");
          input.focus();
        }
      },
      fail: function () { say("The search index could not be loaded; open users/" + id + ".html directly."); }
    });
  }

  document.querySelectorAll("form.user-search").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      search(form);
    });
  });
})();
