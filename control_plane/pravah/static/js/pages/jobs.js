// Jobs list: live over GET /events/jobs (server-sent), newest first, with a
// status filter kept in the URL (#/jobs?status=running).

import { streamEvents } from "../api.js";
import { h } from "../dom.js";
import * as fmt from "../format.js";
import { record } from "../store.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];

export function progressBar(job) {
  const p = fmt.percent(job);
  const label = p === null ? "progress not known yet" : `${p.toFixed(0)}%`;
  return h(
    "div.progress",
    {
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": p === null ? undefined : p.toFixed(0),
      "aria-valuetext": label,
      "aria-label": "Progress",
    },
    h(`div.progress-fill.s-${job.status}`, { style: `width:${p ?? 0}%` }),
    h("span.progress-text", { text: p === null ? "…" : `${p.toFixed(0)}%` }),
  );
}

export function statusBadge(status) {
  return h(`span.badge.s-${status}`, { text: status });
}

function row(job) {
  const running = job.status === "running";
  return h(
    "tr",
    { "data-job-id": job.id, "data-status": job.status },
    h("td", { "data-label": "Status" }, statusBadge(job.status)),
    h(
      "td",
      { "data-label": "Job" },
      h("a", { href: `#/jobs/${job.id}`, text: job.task }),
      h("span.muted.id", { text: ` ${job.id.slice(0, 8)}` }),
    ),
    h("td.source", { "data-label": "Source", title: job.source, text: job.source }),
    h("td", { "data-label": "Progress" }, progressBar(job)),
    h("td.num", {
      "data-label": "Files/s",
      text: running || job.status === "completed" ? fmt.rate(job.progress.files_per_second) : "–",
    }),
    h("td", { "data-label": "Started", text: fmt.time(job.started_at || job.created_at) }),
    h("td.num", { "data-label": "Duration", text: fmt.duration(fmt.jobSeconds(job)) }),
  );
}

export async function render(main, params) {
  const status = params.get("status") || "";
  const select = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "", text: "all" }),
    STATUSES.map((st) => h("option", { value: st, text: st, selected: st === status })),
  );
  select.addEventListener("change", () => {
    location.hash = select.value ? `#/jobs?status=${select.value}` : "#/jobs";
  });
  const live = h("span.live", { role: "status", "aria-live": "polite", text: "connecting…" });
  const body = h("tbody");
  const table = h(
    "table.jobs",
    {},
    h("caption.visually-hidden", { text: "Jobs, newest first" }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Status", "Job", "Source", "Progress", "Files/s", "Started", "Duration"].map((t) =>
          h("th", { scope: "col", text: t }),
        ),
      ),
    ),
    body,
  );
  const empty = h("p.empty", { hidden: true }, "No jobs yet. ", h("a.needs-operator", { href: "#/new", text: "Start one." }));
  const total = h("span.muted");
  main.append(
    h(
      "div.page-head",
      {},
      h("h1", { text: "Jobs" }),
      h("a.button.primary.needs-operator", { href: "#/new", text: "New job" }),
    ),
    h(
      "div.toolbar",
      {},
      h("label", { for: "status-filter", text: "Status" }),
      select,
      total,
      live,
    ),
    h("div.table-wrap", {}, table),
    empty,
  );

  const controller = new AbortController();
  const query = status ? `?status=${status}` : "";
  streamEvents(
    `/events/jobs${query}`,
    (name, page) => {
      if (name !== "jobs") return;
      live.textContent = "live";
      page.items.forEach(record);
      body.replaceChildren(...page.items.map(row));
      empty.hidden = page.items.length > 0;
      total.textContent = `${page.total} job${page.total === 1 ? "" : "s"}`;
    },
    { signal: controller.signal },
  ).catch((err) => {
    live.textContent = `not live: ${err.message}`;
  });
  return () => controller.abort();
}
