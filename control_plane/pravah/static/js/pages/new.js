// New job: source, task (options form from its JSON Schema in GET /config),
// filters, destination; a dry-run preview; errors shown next to their field.

import { ApiError, get, post } from "../api.js";
import { h } from "../dom.js";
import { clearErrors, field, schemaFields, setFieldError } from "../form.js";
import * as fmt from "../format.js";

function listValue(input) {
  return input.value.split(/[,\n]/).map((x) => x.trim()).filter(Boolean);
}

function filterFields() {
  const c = {
    include: h("input", { type: "text", name: "filters.include", placeholder: "**/*.csv" }),
    exclude: h("input", { type: "text", name: "filters.exclude", placeholder: "tmp/**" }),
    extensions: h("input", { type: "text", name: "filters.extensions", placeholder: "csv, tsv" }),
    min_size: h("input", { type: "text", name: "filters.min_size", placeholder: "1KB" }),
    max_size: h("input", { type: "text", name: "filters.max_size", placeholder: "100MB" }),
    modified_after: h("input", { type: "datetime-local", name: "filters.modified_after" }),
    modified_before: h("input", { type: "datetime-local", name: "filters.modified_before" }),
    max_depth: h("input", { type: "number", name: "filters.max_depth", min: 0, step: 1 }),
    include_hidden: h("input", { type: "checkbox", name: "filters.include_hidden" }),
    follow_symlinks: h("input", { type: "checkbox", name: "filters.follow_symlinks" }),
  };
  const element = h(
    "fieldset.filters",
    {},
    h("legend", { text: "Filters" }),
    h(
      "div.grid",
      {},
      field("filters.include", "Include globs", c.include, "Comma separated; a file must match one."),
      field("filters.exclude", "Exclude globs", c.exclude, "Comma separated."),
      field("filters.extensions", "Extensions", c.extensions, "Without the dot."),
      field("filters.min_size", "Minimum size", c.min_size, "Bytes, or e.g. 1KB, 1.5GiB."),
      field("filters.max_size", "Maximum size", c.max_size),
      field("filters.max_depth", "Maximum depth", c.max_depth, "Empty or 0: no limit."),
      field("filters.modified_after", "Modified after", c.modified_after),
      field("filters.modified_before", "Modified before", c.modified_before),
      field("filters.include_hidden", "Include hidden files", c.include_hidden),
      field("filters.follow_symlinks", "Follow symbolic links", c.follow_symlinks),
    ),
  );
  const read = () => {
    const f = {};
    for (const k of ["include", "exclude", "extensions"]) {
      const v = listValue(c[k]);
      if (v.length) f[k] = v;
    }
    for (const k of ["min_size", "max_size"]) if (c[k].value.trim()) f[k] = c[k].value.trim();
    for (const k of ["modified_after", "modified_before"]) {
      if (c[k].value) f[k] = new Date(c[k].value).toISOString();
    }
    if (c.max_depth.value !== "") {
      if (!c.max_depth.validity.valid) {
        throw { field: "filters.max_depth", message: c.max_depth.validationMessage };
      }
      f.max_depth = Number(c.max_depth.value);
    }
    if (c.include_hidden.checked) f.include_hidden = true;
    if (c.follow_symlinks.checked) f.follow_symlinks = true;
    return f;
  };
  return { element, read };
}

function previewView(p) {
  return h(
    "section.preview",
    { "aria-labelledby": "preview-title" },
    h("h2", { id: "preview-title", text: "Dry run: what this job would process" }),
    h(
      "dl.stats",
      {},
      h("div", {}, h("dt", { text: "Files" }), h("dd", { "data-stat": "files", text: fmt.count(p.files) })),
      h("div", {}, h("dt", { text: "Bytes" }), h("dd", { "data-stat": "bytes", text: fmt.bytes(p.bytes) })),
      h("div", {}, h("dt", { text: "Folders" }), h("dd", { text: fmt.count(p.directories) })),
      h("div", {}, h("dt", { text: "Unreadable" }), h("dd", { text: fmt.count(p.errors) })),
    ),
    p.examples.length
      ? [
          h("h3", { text: "First files" }),
          h(
            "ul.paths",
            {},
            p.examples.map((e) => h("li", {}, h("code", { text: e.path }), ` ${fmt.bytes(e.size)}`)),
          ),
        ]
      : h("p", { text: "No file matches." }),
    p.error_examples.length
      ? h(
          "ul.paths",
          {},
          p.error_examples.map((e) => h("li", {}, h("code", { text: e.path }), ` ${e.message}`)),
        )
      : null,
  );
}

export async function render(main, params) {
  const [config, uploads] = await Promise.all([
    get("/config"),
    get("/uploads").catch(() => ({ items: [] })),
  ]);
  const tasks = config.tasks || [];
  const source = h("input", {
    type: "text",
    name: "source",
    required: true,
    list: "upload-paths",
    autocomplete: "off",
    placeholder: "/data/folder",
    value: params.get("source") || "",
  });
  const datalist = h(
    "datalist",
    { id: "upload-paths" },
    uploads.items.map((u) => h("option", { value: u.path, text: `upload: ${u.filename}` })),
  );
  const task = h(
    "select",
    { name: "task", required: true },
    tasks.map((t) => h("option", { value: t.name, text: t.name, selected: t.name === params.get("task") })),
  );
  const taskHint = h("p.hint");
  const optionsBox = h("fieldset.options", {}, h("legend", { text: "Task options" }));
  let options = null;
  const showTask = () => {
    const info = tasks.find((t) => t.name === task.value);
    taskHint.textContent = info?.description || "";
    options = schemaFields(info?.options_schema || {}, "options");
    optionsBox.replaceChildren(h("legend", { text: `Options of ${task.value}` }), options.element);
    optionsBox.hidden = !options.element.childElementCount;
  };
  task.addEventListener("change", showTask);
  const filters = filterFields();
  const destination = h("input", { type: "text", name: "destination", placeholder: "/out (tasks that write files)" });
  const pipeline = h("textarea", { name: "pipeline", rows: 3, placeholder: '[{"task": "..."}]' });
  const formError = h("div.form-error", { role: "alert" });
  const preview = h("div.preview-slot", { "aria-live": "polite" });
  const previewBtn = h("button", { type: "button", id: "dry-run", text: "Preview (dry run)" });
  const submitBtn = h("button.primary", { type: "submit", id: "submit-job", text: "Start job" });

  const form = h(
    "form.job-form",
    { novalidate: true },
    formError,
    field("source", "Source folder", source, "A folder on the server, or an upload's folder (see Uploads)."),
    datalist,
    field("task", "Task", task),
    taskHint,
    optionsBox,
    filters.element,
    h(
      "details.advanced",
      {},
      h("summary", { text: "Destination and pipeline" }),
      field("destination", "Destination", destination, "Where tasks that write files put them."),
      field("pipeline", "Pipeline (JSON, instead of a task)", pipeline, "Several steps, when the server supports them."),
    ),
    h("div.actions", {}, previewBtn, submitBtn),
  );
  main.append(h("h1", { text: "New job" }), form, preview);
  if (!tasks.length) formError.textContent = "The engine offers no task right now.";
  showTask();

  // The request body, or throws {field, message} when the page can tell.
  const build = () => {
    if (!source.value.trim()) throw { field: "source", message: "Give the folder to process." };
    const body = { source: source.value.trim(), task: task.value, options: options.read() };
    const f = filters.read();
    if (Object.keys(f).length) body.filters = f;
    if (destination.value.trim()) body.destination = destination.value.trim();
    if (pipeline.value.trim()) {
      try {
        body.pipeline = JSON.parse(pipeline.value);
      } catch (err) {
        throw { field: "pipeline", message: `not valid JSON: ${err.message}` };
      }
    }
    return body;
  };

  const fail = (err) => {
    if (err instanceof ApiError) {
      const fields = err.fieldErrors();
      let placed = false;
      for (const [name, msg] of Object.entries(fields)) placed = setFieldError(form, name, msg) || placed;
      formError.textContent = placed ? "The server did not accept the form: see the marked field." : err.message;
    } else if (err && err.field) {
      setFieldError(form, err.field, err.message);
      formError.textContent = "Please correct the marked field.";
    } else {
      formError.textContent = err?.message || String(err);
    }
    form.querySelector(".field.invalid input, .field.invalid select, .field.invalid textarea")?.focus();
  };

  const run = async (button, action) => {
    clearErrors(form);
    formError.textContent = "";
    button.disabled = true;
    try {
      await action(build());
    } catch (err) {
      fail(err);
    } finally {
      button.disabled = false;
    }
  };

  previewBtn.addEventListener("click", () =>
    run(previewBtn, async (body) => {
      preview.replaceChildren(h("p", { text: "Listing…" }));
      try {
        preview.replaceChildren(previewView(await post("/jobs/dry-run", body)));
      } catch (err) {
        preview.replaceChildren();
        throw err;
      }
    }),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(submitBtn, async (body) => {
      const job = await post("/jobs", body);
      location.hash = `#/jobs/${job.id}`;
    });
  });
}
