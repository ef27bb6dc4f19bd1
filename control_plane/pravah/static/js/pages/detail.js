// Job detail: live status and progress over GET /jobs/{id}/events, a
// throughput chart, cancel, errors with paths and messages, the task's
// results view and a download link for every per-file result (JSON lines).

import { ApiError, download, get, post, streamEvents } from "../api.js";
import { append, h } from "../dom.js";
import { lineChart } from "../charts.js";
import * as fmt from "../format.js";
import { resultsView } from "../results.js";
import { record, throughput } from "../store.js";
import { progressBar, statusBadge } from "./jobs.js";

function stat(label, value, key) {
  return h("div", {}, h("dt", { text: label }), h("dd", { "data-stat": key, text: value }));
}

export async function render(main, params) {
  const id = params.get("id");
  let job = await get(`/jobs/${encodeURIComponent(id)}`);
  record(job);

  const title = h("h1", {}, `${job.task} job `, h("span.muted.id", { text: id.slice(0, 8) }));
  const badge = h("span.status-slot", { role: "status", "aria-live": "polite" });
  const cancel = h("button.danger.needs-operator", { type: "button", id: "cancel-job", text: "Cancel job" });
  const cancelMsg = h("span.muted", { "aria-live": "polite" });
  const bar = h("div.bar-slot");
  const stats = h("dl.stats");
  const meta = h("dl.meta");
  const chartSlot = h("div.chart-slot");
  const errorBox = h("div.job-error", { role: "alert" });
  const after = h("div.after");
  main.append(
    h("p.crumbs", {}, h("a", { href: "#/jobs", text: "← Jobs" })),
    h("div.page-head", {}, title, h("div.head-actions", {}, badge, cancel)),
    cancelMsg,
    errorBox,
    bar,
    stats,
    h("section", { "aria-labelledby": "tp-title" }, h("h2", { id: "tp-title", text: "Throughput" }), chartSlot),
    meta,
    after,
  );

  const paint = () => {
    const p = job.progress;
    badge.replaceChildren(statusBadge(job.status));
    cancel.hidden = fmt.TERMINAL.has(job.status);
    cancel.disabled = job.cancel_requested;
    if (job.cancel_requested && !fmt.TERMINAL.has(job.status)) cancelMsg.textContent = "Cancelling…";
    else if (fmt.TERMINAL.has(job.status)) cancelMsg.textContent = "";
    errorBox.textContent = job.error || "";
    errorBox.hidden = !job.error;
    bar.replaceChildren(progressBar(job));
    stats.replaceChildren(
      stat("Files", `${fmt.count(p.files_done)} of ${p.files_total === null ? "…" : fmt.count(p.files_total)}`, "files"),
      stat("Failed", fmt.count(p.files_failed), "failed"),
      // No byte total for size-independent tasks (csv-header): bytes seen only.
      stat("Bytes", p.bytes_total === null ? fmt.bytes(p.bytes_done) : `${fmt.bytes(p.bytes_done)} of ${fmt.bytes(p.bytes_total)}`, "bytes"),
      stat("Files/s", fmt.rate(p.files_per_second), "rate"),
      stat("Throughput", `${fmt.bytes(p.bytes_per_second)}/s`, "bps"),
      stat(fmt.TERMINAL.has(job.status) ? "Took" : "ETA", fmt.TERMINAL.has(job.status) ? fmt.duration(fmt.jobSeconds(job)) : fmt.duration(p.eta_seconds), "time"),
    );
    meta.replaceChildren();
    append(meta, [
      h("dt", { text: "Source" }), h("dd", {}, h("code", { text: job.source })),
      h("dt", { text: "Created" }), h("dd", { text: fmt.time(job.created_at) }),
      h("dt", { text: "Started" }), h("dd", { text: fmt.time(job.started_at) }),
      h("dt", { text: "Finished" }), h("dd", { text: fmt.time(job.finished_at) }),
      h("dt", { text: "Options" }), h("dd", {}, h("code", { text: JSON.stringify(job.options) })),
      h("dt", { text: "Filters" }), h("dd", {}, h("code", { text: JSON.stringify(job.filters) })),
      job.destination ? [h("dt", { text: "Destination" }), h("dd", {}, h("code", { text: job.destination }))] : null,
    ]);
    const points = throughput(job.id);
    chartSlot.replaceChildren(
      points.length >= 2
        ? lineChart(points, { title: "Files per second over the run", format: (v) => fmt.rate(v), unit: "files/s" })
        : h("p.muted", {
            text:
              job.status === "pending"
                ? "The chart starts when the job runs."
                : `Average ${fmt.rate(p.files_per_second)}. The chart fills while this page (or the jobs list) watches a running job.`,
          }),
    );
  };

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      job = await post(`/jobs/${id}/cancel`, undefined);
      cancelMsg.textContent = "Cancel requested.";
      paint();
    } catch (err) {
      cancelMsg.textContent = err instanceof ApiError ? err.message : String(err);
      cancel.disabled = false;
    }
  });

  const finish = async () => {
    after.replaceChildren(h("p.muted", { text: "Loading results…" }));
    const parts = [];
    const name = `${job.task}-${job.id.slice(0, 8)}.jsonl`;
    const href = `/jobs/${job.id}/results?format=jsonl`;
    const link = h("a.button", { href, download: name, id: "download-results", text: "Download all results (JSON lines)" });
    link.addEventListener("click", (e) => {
      e.preventDefault();
      download(href, name).catch((err) => (errorBox.textContent = err.message));
    });
    // A job cancelled or failed before any batch finished has no results;
    // the job says so, and the page does not ask for what is not there.
    const page = job.results_available ? await get(`/jobs/${job.id}/results?limit=100`) : null;
    if (page) parts.push(h("p.actions", {}, link));
    if (job.results_removed_at) {
      // Past PRAVAH_RESULTS_RETENTION: the counts and summary above stay.
      const when = new Date(job.results_removed_at).toLocaleString();
      parts.push(h("p.muted", { id: "results-removed", text: `Per-file results and errors were removed on ${when} (results retention).` }));
      if (job.summary) parts.push(resultsView(job, { summary: job.summary, items: [], total: 0 }));
      after.replaceChildren(...parts);
      return;
    }
    let errors = { items: [], total: 0 };
    errors = await get(`/jobs/${job.id}/errors?limit=200`);
    const listingErrors = job.summary?.listing?.error_examples || [];
    const all = [...errors.items.map((e) => ({ path: e.path, kind: e.error_kind, message: e.error })), ...listingErrors];
    parts.push(
      h(
        "section.errors",
        { "aria-labelledby": "errors-title" },
        h("h2", { id: "errors-title", text: `Errors (${fmt.count(errors.total + (job.summary?.listing?.errors || 0))})` }),
        all.length
          ? h(
              "div.table-wrap",
              {},
              h(
                "table.errors-table",
                {},
                h("thead", {}, h("tr", {}, ["Path", "Kind", "Message"].map((t) => h("th", { scope: "col", text: t })))),
                h(
                  "tbody",
                  {},
                  all.map((e) =>
                    h("tr", {}, h("td", {}, h("code", { text: e.path })), h("td", { text: e.kind || "" }), h("td", { text: e.message })),
                  ),
                ),
              ),
            )
          : h("p.muted", { text: "No file failed." }),
        errors.total > errors.items.length ? h("p.muted", { text: `First ${errors.items.length} shown; all are in the download.` }) : null,
      ),
    );
    if (page) parts.push(resultsView(job, page));
    after.replaceChildren(...parts);
  };

  paint();
  const controller = new AbortController();
  if (fmt.TERMINAL.has(job.status)) {
    await finish();
  } else {
    streamEvents(
      `/jobs/${id}/events`,
      (name, data) => {
        if (name !== "progress") return;
        job = data;
        record(job);
        paint();
      },
      { signal: controller.signal },
    )
      .then(async () => {
        if (controller.signal.aborted) return;
        job = await get(`/jobs/${id}`);
        paint();
        await finish();
      })
      .catch((err) => (errorBox.textContent = err.message));
  }
  return () => controller.abort();
}
