/* The home page's rates chart: the server puts the figure as JSON in
 * <script type="application/json" id="home-figure">; this draws it with Plotly (no inline
 * script, so the page runs under the content security policy). */
(function () {
  "use strict";

  function draw() {
    var source = document.getElementById("home-figure");
    var div = document.getElementById("rates-chart");
    if (!source || !div || !window.Plotly) return;
    var figure = JSON.parse(source.textContent);
    window.Plotly.newPlot(div, figure.data, figure.layout,
                          {displayModeBar: false, responsive: true});
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
}());
