// Inline SVG charts: horizontal bars and a line over time. Each chart is an
// <svg role="img"> with a <title> summing it up; the numbers themselves are
// also in the tables beside the charts, for screen readers and copying.

import { h, s } from "./dom.js";

// items: [{label, value, display?}]; one bar per item, largest first as given.
export function barChart(items, { title, max = 12, format = String } = {}) {
  const shown = items.slice(0, max);
  const top = Math.max(1, ...shown.map((d) => d.value));
  const rowH = 28;
  const height = shown.length * rowH + 8;
  const svg = s(
    "svg",
    {
      class: "chart bars",
      viewBox: `0 0 600 ${height}`,
      role: "img",
      "aria-label": title,
      preserveAspectRatio: "xMinYMin meet",
    },
    s("title", {}, title),
  );
  shown.forEach((d, i) => {
    const y = 4 + i * rowH;
    const w = Math.max(2, (d.value / top) * 380);
    const g = s("g", { class: "bar", "data-label": d.label, "data-value": d.value });
    const label = d.label.length > 34 ? `${d.label.slice(0, 33)}…` : d.label;
    g.append(
      s("text", { x: 0, y: y + 18, class: "bar-label" }, label, s("title", {}, d.label)),
      s("rect", { x: 210, y: y + 4, width: w, height: rowH - 10, rx: 3 }),
      s("text", { x: 216 + w, y: y + 18, class: "bar-value" }, d.display ?? format(d.value)),
    );
    svg.append(g);
  });
  const fig = h("figure.chart-figure", {}, svg);
  if (items.length > max) fig.append(h("figcaption", { text: `Top ${max} of ${items.length}.` }));
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
