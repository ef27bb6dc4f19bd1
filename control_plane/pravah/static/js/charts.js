// Charts drawn locally: horizontal bars (HTML) and a line over time (inline
// SVG with role="img" and a <title>). The numbers are also in the tables
// beside the charts, for screen readers and copying.

import { h, s } from "./dom.js";

// items: [{label, value, display?}] -> one horizontal bar per item, in the
// order given. Plain HTML bars (not SVG) so labels wrap and stay readable at
// phone width; each row reads as "label: value" to a screen reader.
export function barChart(items, { title, max = 12, format = String } = {}) {
  const shown = items.slice(0, max);
  const top = Math.max(1, ...shown.map((d) => d.value));
  const fig = h(
    "figure.chart-figure.bars",
    { "aria-label": title },
    h(
      "ol.bar-list",
      {},
      shown.map((d) =>
        h(
          "li.bar",
          { "data-label": d.label, "data-value": d.value },
          h("span.bar-label", { text: d.label }),
          h(
            "span.bar-track",
            {},
            h("span.bar-fill", { style: `width:${Math.max(0.5, (d.value / top) * 75).toFixed(2)}%` }),
            h("span.bar-value", { text: d.display ?? format(d.value) }),
          ),
        ),
      ),
    ),
  );
  fig.prepend(h("figcaption", { text: items.length > max ? `${title} (top ${max} of ${items.length})` : title }));
  return fig;
}

// points: [{t: ms, v: number}] -> a line with a time axis and a value axis.
export function lineChart(points, { title, format = String, unit = "" } = {}) {
  const W = 600;
  const H = 180;
  const left = 64;
  const bottom = 24;
  const svg = s(
    "svg",
    { class: "chart line", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    s("title", {}, title),
  );
  if (points.length < 2) return svg;
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  const span = Math.max(1, t1 - t0);
  const top = Math.max(1e-9, ...points.map((p) => p.v)) * 1.1;
  const x = (t) => left + ((t - t0) / span) * (W - left - 8);
  const y = (v) => H - bottom - (v / top) * (H - bottom - 8);
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    svg.append(
      s("line", { x1: left, x2: W - 8, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, format(v)),
    );
  }
  svg.append(
    s("text", { x: left, y: H - 6, class: "axis" }, "0s"),
    s("text", { x: W - 8, y: H - 6, class: "axis", "text-anchor": "end" }, `${(span / 1000).toFixed(1)}s`),
  );
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  const area = `${d} L${x(t1).toFixed(1)},${y(0)} L${x(t0).toFixed(1)},${y(0)} Z`;
  svg.append(s("path", { d: area, class: "area" }), s("path", { d, class: "stroke" }));
  if (unit) svg.append(s("text", { x: left + 4, y: 16, class: "axis" }, unit));
  return svg;
}
