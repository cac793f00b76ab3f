// Draws the overview's Plotly figures (built server-side: dashboard/charts.py) into their <div>s.
(function () {
  "use strict";
  var source = document.getElementById("chart-figures");
  if (!source || typeof Plotly === "undefined") return;
  var figures = JSON.parse(source.textContent);
  var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };

  // On a phone's width the legend wraps onto several rows: give the plot that height back.
  // Always a copy: plotly writes into the layout it is given, and the figure is drawn again (below).
  function fitted(layout, traces, width) {
    var copy = JSON.parse(JSON.stringify(layout));
    if (width >= 560) return copy;
    copy.font = Object.assign({}, copy.font, { size: 11 });
    if (copy.showlegend !== false && traces.length > 1) {
      copy.height = (copy.height || 320) + Math.ceil(traces.length / 2) * 22;
      copy.legend = Object.assign({}, copy.legend, { font: { size: 11 } });
    }
    if (copy.margin && copy.margin.l > 100) copy.margin = Object.assign({}, copy.margin, { l: 100 });
    return copy;
  }

  var narrow = {};
  Object.keys(figures).forEach(function (id) {
    var node = document.getElementById(id);
    if (!node) return;
    var figure = figures[id];
    narrow[id] = node.clientWidth < 560;
    Plotly.newPlot(node, figure.data, fitted(figure.layout, figure.data, node.clientWidth), config).then(function () {
      node.setAttribute("data-drawn", "true");
    });
  });

  // A phone turned sideways, a window made narrower: plotly resizes the plot itself (responsive),
  // and the layout's phone fitting follows when the width crosses the line.
  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      Object.keys(narrow).forEach(function (id) {
        var node = document.getElementById(id);
        var now = node.clientWidth < 560;
        if (now === narrow[id]) return;
        narrow[id] = now;
        var figure = figures[id];
        Plotly.react(node, figure.data, fitted(figure.layout, figure.data, node.clientWidth), config);
      });
    }, 150);
  });
})();
