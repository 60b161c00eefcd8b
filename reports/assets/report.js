// Draws every chart of a report: each element with data-chart names the
// <script type="application/json"> that holds its ECharts option. Option
// strings that start with "@" name a formatter below (JSON cannot carry
// functions). Uses the SVG renderer, so charts are DOM a test can inspect.
(function () {
  'use strict';

  function trimmed(value, digits) {
    return Number(value.toFixed(digits)).toString();
  }
  function ms(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return '–';
    if (Array.isArray(value)) value = value[1];
    if (value >= 1000) return trimmed(value / 1000, 2) + ' s';
    if (value >= 10) return trimmed(value, 0) + ' ms';
    if (value >= 1) return trimmed(value, 1) + ' ms';
    return trimmed(value, 3) + ' ms';
  }
  // The distribution's x axis is 1 / (1 - quantile): 10 is 90 %, 100 is 99 %.
  function percentile(value) {
    var p = (1 - 1 / value) * 100;
    if (p <= 0) return '0%';
    return trimmed(p, 5) + '%';
  }
  var formatters = {
    ms: ms,
    seconds: function (value) { return trimmed(value, 1) + ' s'; },
    count: function (value) {
      if (value === null || value === undefined) return '–';
      return Array.isArray(value) ? String(value[1]) : String(value);
    },
    percentile: percentile,
    percentileLabel: function (params) { return percentile(params.value); },
  };

  function resolve(node) {
    if (Array.isArray(node)) return node.map(resolve);
    if (node && typeof node === 'object') {
      Object.keys(node).forEach(function (key) { node[key] = resolve(node[key]); });
      return node;
    }
    if (typeof node === 'string' && node.charAt(0) === '@' && formatters[node.slice(1)]) {
      return formatters[node.slice(1)];
    }
    return node;
  }

  var charts = [];
  document.querySelectorAll('[data-chart]').forEach(function (element) {
    var source = document.getElementById(element.getAttribute('data-chart'));
    var option = resolve(JSON.parse(source.textContent));
    var chart = echarts.init(element, null, { renderer: 'svg' });
    chart.setOption(option);
    charts.push(chart);
  });
  window.addEventListener('resize', function () {
    charts.forEach(function (chart) { chart.resize(); });
  });
  document.body.setAttribute('data-charts-rendered', String(charts.length));
})();
