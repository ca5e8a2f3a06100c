/* The mailing page's charts as live parts.
 *
 * The server builds the figures; #live carries them as JSON in
 * <script type="application/json" id="chart-figures"> on the page and on every poll, the last
 * one (HTTP 286) too. Each time htmx brings a new copy, the charts outside #live are redrawn in
 * place with Plotly.react: same DOM nodes, no flicker. This file is loaded once per page, never
 * by a swap, so its one listener cannot pile up.
 */
(function () {
  "use strict";

  var CHARTS = {delivery: "delivery-chart", activity: "activity-chart"};
  var CONFIG = {displayModeBar: false, responsive: true};
  var source = null;  // the #chart-figures element last read
  var drawn = {};     // chart key -> JSON of the figure on screen

  function draw() {
    var current = document.getElementById("chart-figures");
    var section = document.getElementById("charts");
    if (!current || current === source || !section || !window.Plotly) return;
    source = current;
    var figures = JSON.parse(current.textContent);
    // Shown before plotting: a chart drawn into a hidden element would have no size.
    section.hidden = !Object.keys(CHARTS).some(function (key) { return figures[key]; });
    Object.keys(CHARTS).forEach(function (key) {
      var div = document.getElementById(CHARTS[key]);
      var figure = figures[key];
      if (!div) return;
      div.hidden = !figure;
      if (!figure) {
        delete drawn[key];
        return;
      }
      var text = JSON.stringify(figure);
      if (drawn[key] === text) return;  // nothing new: leave the chart (and its hover) alone
      drawn[key] = text;
      // Keep what the user did (legend toggles, zoom) across updates.
      figure.layout.uirevision = key;
      window.Plotly.react(div, figure.data, figure.layout, CONFIG);
    });
  }

  document.addEventListener("htmx:afterSettle", draw);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
}());
