/* The mailing page between polls.
 *
 * - "updated N s ago": #live says when its figures were last refreshed; the age is counted here
 *   from the moment each copy of #live arrived (the browser's clock, not the server's).
 * - An audience tab shown empty (e.g. opened while the mailing was still being prepared) is
 *   reloaded once a poll brings it a count, so it never stays "0" until a reload.
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

  function refillEmptyTab() {
    var empty = document.querySelector("#audience [data-empty-tab]");
    if (!empty || !empty.dataset.emptyTab || empty.dataset.reloading || !window.htmx) return;
    var count = document.getElementById("tab-count-" + empty.dataset.emptyTab);
    if (!count || !(parseInt(count.textContent.replace(/[^0-9]/g, ""), 10) > 0)) return;
    empty.dataset.reloading = "1";
    window.htmx.ajax("GET", empty.dataset.audienceUrl, {target: "#audience", swap: "outerHTML"});
  }

  document.addEventListener("htmx:afterSettle", function () {
    stamp();
    refillEmptyTab();
  });
  setInterval(tick, 1000);
}());
