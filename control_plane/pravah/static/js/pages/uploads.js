// Uploads: drop files (or pick them) to send them to POST /uploads with a
// progress bar each; every upload is a folder usable as a job source, kept
// until deleted here (the service refuses while a job or schedule needs it).

import { ApiError, del, get, upload } from "../api.js";
import { h } from "../dom.js";
import * as fmt from "../format.js";

function uploadRow(u) {
  const problem = h("p.error", { role: "alert", hidden: true });
  const remove = h("button", { type: "button", text: "Delete", "aria-label": `Delete ${u.filename}` });
  const row = h(
    "li.upload",
    { "data-upload-id": u.id },
    h("div", {}, h("strong", { text: u.filename }), ` ${fmt.bytes(u.size)} · ${fmt.time(u.created_at)}`),
    h("div", {}, h("code", { text: u.path })),
    h(
      "div.actions",
      {},
      h("a.button", { href: `#/new?source=${encodeURIComponent(u.path)}`, text: "Use as job source" }),
      remove,
    ),
    problem,
  );
  remove.addEventListener("click", async () => {
    if (!window.confirm(`Delete ${u.filename} (${fmt.bytes(u.size)})? This cannot be undone.`)) return;
    remove.disabled = true;
    try {
      await del(`/uploads/${encodeURIComponent(u.id)}`);
      const list = row.parentElement;
      row.remove();
      list?.dispatchEvent(new Event("pravah:rows"));
    } catch (err) {
      problem.textContent = err instanceof ApiError ? err.message : String(err);
      problem.hidden = false;
      remove.disabled = false;
    }
  });
  return row;
}

export async function render(main) {
  const listing = await get("/uploads");
  const list = h("ul.uploads", {}, listing.items.map(uploadRow));
  const empty = h("p.muted", { text: "Nothing uploaded yet." });
  const showEmpty = () => {
    empty.hidden = list.children.length > 0;
  };
  list.addEventListener("pravah:rows", showEmpty);
  showEmpty();
  const progress = h("ul.upload-progress", { "aria-live": "polite" });
  const input = h("input", { type: "file", id: "upload-input", multiple: true, class: "visually-hidden" });
  const zone = h(
    "div.dropzone",
    { tabindex: 0, role: "button", "aria-describedby": "drop-hint" },
    h("p", {}, h("strong", { text: "Drop files here" }), " or ", h("label.link", { for: "upload-input", text: "choose files" })),
    h("p.hint", { id: "drop-hint", text: `Up to ${fmt.bytes(listing.max_bytes)} each. ZIP files are kept as they are.` }),
    input,
  );

  const send = async (file) => {
    const bar = h("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
    const note = h("span", { text: "0%" });
    const item = h("li", {}, h("span", { text: `${file.name} ` }), bar, note);
    progress.prepend(item);
    try {
      const u = await upload(file, (f) => {
        bar.value = Math.round(f * 100);
        note.textContent = `${Math.round(f * 100)}%`;
      });
      bar.value = 100;
      note.textContent = "done";
      item.classList.add("done");
      list.prepend(uploadRow(u));
      showEmpty();
    } catch (err) {
      item.classList.add("failed");
      note.textContent = err instanceof ApiError ? err.message : String(err);
    }
  };
  const sendAll = (files) => Promise.all([...files].map(send));

  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    sendAll(e.dataTransfer.files);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => {
    sendAll(input.files);
    input.value = "";
  });

  main.append(
    h("h1", { text: "Uploads" }),
    zone,
    progress,
    h("h2", { text: "Uploaded" }),
    empty,
    list,
  );
}
