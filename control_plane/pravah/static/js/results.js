// Results views suited to each task, from the job's summary and the first
// page of per-file results. Shapes that are not recognised fall back to the
// generic view (the summary as JSON and a table of per-file results), so a
// new task shows something useful before it gets its own view.

import { request } from "./api.js";
import { barChart } from "./charts.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";

function section(title, ...children) {
  return h("section.results", { "aria-label": title }, h("h2", { text: title }), ...children);
}

function totals(pairs) {
  return h(
    "dl.stats",
    {},
    pairs.map(([label, value, key]) => h("div", {}, h("dt", { text: label }), h("dd", { "data-stat": key, text: value }))),
  );
}

// Schema rows drawn at once: headerless files make one schema per file, and
// 100,000 table rows froze the page; the search box reaches the others.
const MAX_SCHEMA_ROWS = 500;

// csv-header: {"schemas": [{"columns", "files", "example"}], "distinct_schemas", "files", "failed"}
function csvHeader(job, summary) {
  const schemas = summary.schemas;
  const label = (sch) => (sch.columns.length ? sch.columns.join(", ") : "(no columns)");
  const search = h("input", { type: "search", id: "schema-search", placeholder: "column name" });
  const body = h("tbody");
  const shown = h("p.muted", { "aria-live": "polite" });
  const fill = () => {
    const q = search.value.trim().toLowerCase();
    const rows = schemas.filter((sch) => !q || sch.columns.some((c) => c.toLowerCase().includes(q)) || String(sch.example || "").toLowerCase().includes(q));
    body.replaceChildren(
      ...rows.slice(0, MAX_SCHEMA_ROWS).map((sch, i) =>
        h(
          "tr",
          { "data-files": sch.files },
          h("td.num", { "data-label": "#", text: i + 1 }),
          h("td", { "data-label": "Columns" }, sch.columns.map((c) => h("span.col", { text: c }))),
          h("td.num", { "data-label": "Files", text: fmt.count(sch.files) }),
          h("td", { "data-label": "Example" }, h("code", { text: sch.example || "" })),
        ),
      ),
    );
    shown.textContent =
      (rows.length > MAX_SCHEMA_ROWS
        ? `${fmt.count(MAX_SCHEMA_ROWS)} of ${fmt.count(rows.length)} matching schemas shown (${fmt.count(schemas.length)} in all); search to narrow.`
        : `${fmt.count(rows.length)} of ${fmt.count(schemas.length)} schemas shown.`) +
      (summary.omitted_schemas
        ? ` The summary lists the ${fmt.count(schemas.length)} most common; ${fmt.count(summary.omitted_schemas)} more are in the per-file results.`
        : "");
  };
  search.addEventListener("input", fill);
  fill();
  return section(
    "Schemas",
    totals([
      ["Distinct schemas", fmt.count(summary.distinct_schemas ?? schemas.length), "distinct"],
      ["Files read", fmt.count(summary.files), "summary-files"],
      ["Failed", fmt.count(summary.failed), "summary-failed"],
    ]),
    schemas.length
      ? barChart(
          schemas.map((sch) => ({ label: label(sch), value: sch.files })),
          { title: "Files per distinct schema", format: fmt.count },
        )
      : h("p.muted", { text: "No CSV header was read." }),
    h("div.toolbar", {}, h("label", { for: "schema-search", text: "Search columns" }), search, shown),
    h(
      "div.table-wrap",
      {},
      h(
        "table.schemas",
        {},
        h("thead", {}, h("tr", {}, ["#", "Columns", "Files", "Example"].map((t) => h("th", { scope: "col", text: t })))),
        body,
      ),
    ),
  );
}

// A {key: number|{bytes, files}} map or a [{name|extension|folder, bytes, files}] list -> rows.
function groups(value, nameKeys) {
  if (Array.isArray(value)) {
    return value
      .filter((x) => x && typeof x === "object")
      .map((x) => ({
        name: String(nameKeys.map((k) => x[k]).find((v) => v !== undefined) ?? "?"),
        bytes: Number(x.bytes ?? x.size ?? 0),
        files: x.files ?? x.count,
      }));
  }
  if (value && typeof value === "object") {
    return Object.entries(value).map(([name, v]) =>
      typeof v === "number" ? { name, bytes: v } : { name, bytes: Number(v?.bytes ?? v?.size ?? 0), files: v?.files ?? v?.count },
    );
  }
  return null;
}

function findKey(summary, pattern) {
  return Object.keys(summary).find((k) => pattern.test(k));
}

function groupChart(title, rows) {
  rows.sort((a, b) => b.bytes - a.bytes);
  return h(
    "div.group",
    {},
    h("h3", { text: title }),
    barChart(
      rows.map((r) => ({ label: r.name || "(none)", value: r.bytes, display: `${fmt.bytes(r.bytes)}${r.files !== undefined ? ` · ${fmt.count(r.files)} files` : ""}` })),
      { title, format: fmt.bytes },
    ),
  );
}

// inventory: bytes by extension and by folder.
function inventory(job, summary) {
  const extKey = findKey(summary, /ext/i);
  const dirKey = findKey(summary, /folder|dir/i);
  const byExt = extKey && groups(summary[extKey], ["extension", "ext", "name", "key"]);
  const byDir = dirKey && groups(summary[dirKey], ["folder", "directory", "dir", "path", "name", "key"]);
  if (!byExt && !byDir) return null;
  const plain = Object.entries(summary).filter(([, v]) => typeof v === "number");
  return section(
    "Inventory",
    plain.length ? totals(plain.map(([k, v]) => [k.replace(/_/g, " "), /bytes/.test(k) ? fmt.bytes(v) : fmt.count(v), k])) : null,
    byExt?.length ? groupChart("Bytes by extension", byExt) : null,
    byDir?.length ? groupChart("Bytes by folder", byDir) : null,
  );
}

// hash: the engine's summary {duplicates: [{hash, size, files, wasted_bytes,
// example}], duplicate_groups, duplicate_files, wasted_bytes}; groups may
// also name their paths (paths: [...]).
function hash(job, summary) {
  const list = Array.isArray(summary.duplicates) ? summary.duplicates : null;
  if (!list) return null;
  const copies = (g) => (Array.isArray(g.paths) ? g.paths.length : Number(g.files) || 0);
  return section(
    "Duplicate groups",
    totals([
      ["groups", fmt.count(summary.duplicate_groups ?? list.length), "groups"],
      ["duplicate files", fmt.count(summary.duplicate_files ?? 0), "files"],
      ["wasted", fmt.bytes(summary.wasted_bytes ?? 0), "wasted"],
    ]),
    list.length
      ? h(
          "ol.dups",
          {},
          list.slice(0, 100).map((g) =>
            h(
              "li",
              {},
              h("p", {}, h("code", { text: String(g.hash ?? "") }), ` · ${fmt.bytes(g.size)} each · ${copies(g)} copies · ${fmt.bytes(g.wasted_bytes ?? 0)} wasted`),
              Array.isArray(g.paths)
                ? h("ul.paths", {}, g.paths.slice(0, 20).map((p) => h("li", {}, h("code", { text: String(p) }))))
                : g.example
                  ? h("p.muted", {}, "e.g. ", h("code", { text: String(g.example) }))
                  : null,
            ),
          ),
        )
      : h("p.muted", { text: "No duplicates found." }),
  );
}

// An <img> whose bytes are fetched with the API key: a plain src would be
// sent without it and refused when auth is on.
function authorizedImage(path, alt) {
  const img = h("img", { alt });
  request("GET", path, undefined, { raw: true })
    .then((resp) => resp.blob())
    .then((blob) => {
      img.src = URL.createObjectURL(blob);
    })
    .catch(() => {
      img.alt = `${alt} (could not be loaded)`;
    });
  return img;
}

// thumbnail: a grid of some outputs (served by GET /jobs/{id}/outputs/...).
function thumbnail(job, summary, page) {
  const outputs = page.items
    .map((it) => it.output || it.thumbnail || it.output_path)
    .filter((x) => typeof x === "string")
    .slice(0, 24);
  if (!outputs.length) return null;
  return section(
    "Thumbnails",
    h(
      "ul.thumbs",
      {},
      outputs.map((o) =>
        h(
          "li",
          {},
          authorizedImage(`/jobs/${job.id}/output?path=${encodeURIComponent(o)}`, o),
          h("span", { text: o.split("/").pop() }),
        ),
      ),
    ),
  );
}

function generic(job, summary, page) {
  const items = page.items.slice(0, 20);
  const keys = [...new Set(page.items.flatMap((it) => Object.keys(it)))].slice(0, 8);
  return section(
    "Results",
    summary ? h("details", { open: true }, h("summary", { text: "Summary" }), h("pre.json", { text: JSON.stringify(summary, null, 2) })) : null,
    items.length
      ? h(
          "div.table-wrap",
          {},
          h(
            "table.generic",
            {},
            h("caption", { text: `First ${items.length} of ${fmt.count(page.total)} per-file results (all in the download)` }),
            h("thead", {}, h("tr", {}, keys.map((k) => h("th", { scope: "col", text: k })))),
            h(
              "tbody",
              {},
              items.map((it) =>
                h("tr", {}, keys.map((k) => h("td", { text: typeof it[k] === "object" ? JSON.stringify(it[k]) : (it[k] ?? "") }))),
              ),
            ),
          ),
        )
      : h("p.muted", { text: "No per-file results." }),
  );
}

export function resultsView(job, page) {
  const summary = page.summary || job.summary;
  let view = null;
  try {
    if (summary && Array.isArray(summary.schemas)) view = csvHeader(job, summary);
    else if (summary && job.task.includes("inventory")) view = inventory(job, summary);
    else if (summary && job.task.includes("hash")) view = hash(job, summary);
    else if (job.task.includes("thumb")) view = thumbnail(job, summary, page);
    if (!view && summary) view = inventory(job, summary) || hash(job, summary);
  } catch {
    view = null; // an unexpected shape: the generic view below
  }
  return view || generic(job, summary, page);
}
