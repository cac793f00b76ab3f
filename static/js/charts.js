// Draws the overview's Plotly figures (built server-side: dashboard/charts.py) into their <div>s.
(function () {
  "use strict";
  var source = document.getElementById("chart-figures");
  if (!source || typeof Plotly === "undefined") return;
  var figures = JSON.parse(source.textContent);
  var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };

  // On a phone's width the legend wraps onto several rows: give the plot that height back.
  function fitted(layout, traces, width) {
    if (width >= 560) return layout;
    var copy = JSON.parse(JSON.stringify(layout));
    copy.font = Object.assign({}, copy.font, { size: 11 });
    if (copy.showlegend !== false && traces.length > 1) {
      copy.height = (copy.height || 320) + Math.ceil(traces.length / 2) * 22;
      copy.legend = Object.assign({}, copy.legend, { font: { size: 11 } });
    }
    if (copy.margin && copy.margin.l > 100) copy.margin = Object.assign({}, copy.margin, { l: 100 });
    return copy;
  }

  Object.keys(figures).forEach(function (id) {
    var node = document.getElementById(id);
    if (!node) return;
    var figure = figures[id];
    Plotly.newPlot(node, figure.data, fitted(figure.layout, figure.data, node.clientWidth), config).then(function () {
      node.setAttribute("data-drawn", "true");
    });
  });
})();
