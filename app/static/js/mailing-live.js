/* The mailing page between polls.
 *
 * - "updated N s ago": #live says when its figures were last refreshed; the age is counted here
 *   from the moment each copy of #live arrived (the browser's clock, not the server's).
 * - The audience tab on screen is reloaded when a poll brings it a new count (an "All" tab opened
 *   while the mailing was being prepared, a "Not sent" tab while a canceled batch settles), but
 *   only on its first page and without a search, so nobody's reading is pulled away.
 *
 * Loaded once per page, never by a swap, so its listeners cannot pile up.
 */
(function () {
  "use strict";

  var seen = null;     // the [data-refreshed] element last stamped
  var arrived = 0;     // when it arrived (ms)
  var suffix = "";

  function stamp() {
    var el = document.querySelector("#live [data-refreshed]");
    if (!el || el === seen) return;
    seen = el;
    arrived = Date.now();
    var text = el.textContent;
    var cut = text.indexOf(";");
    suffix = cut >= 0 ? text.slice(cut) : "";
  }

  function tick() {
    stamp();
    if (!seen || !seen.isConnected) return;
    var age = Math.round((Date.now() - arrived) / 1000);
    seen.textContent = (age < 2 ? "updated just now" : "updated " + age + " s ago") + suffix;
  }

  function refreshTab() {
    var audience = document.getElementById("audience");
    if (!audience || !audience.dataset.reloadUrl || audience.dataset.reloading || !window.htmx) {
      return;
    }
    var count = document.getElementById("tab-count-" + audience.dataset.tab);
    if (!count) return;
    var now = parseInt(count.textContent.replace(/[^0-9]/g, ""), 10);
    if (isNaN(now) || String(now) === audience.dataset.shownCount) return;
    audience.dataset.reloading = "1";
    window.htmx.ajax("GET", audience.dataset.reloadUrl, {target: "#audience", swap: "outerHTML"});
  }

  document.addEventListener("htmx:afterSettle", function () {
    stamp();
    refreshTab();
  });
  setInterval(tick, 1000);
}());
