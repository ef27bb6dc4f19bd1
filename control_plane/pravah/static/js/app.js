// The dashboard's entry point: fragment routing, sign-in box, error banner.
//
// Routes: #/jobs[?status=], #/new[?source=], #/jobs/<id>, #/uploads. Each page
// module exports render(main, params) and may return a cleanup function,
// called on navigation (it aborts that page's event streams).

import { apiKey, request, setApiKey } from "./api.js";
import * as detail from "./pages/detail.js";
import * as jobs from "./pages/jobs.js";
import * as newJob from "./pages/new.js";
import * as uploads from "./pages/uploads.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
let cleanup = null;

export function showBanner(message) {
  banner.textContent = message;
  banner.hidden = !message;
}

function parse() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  return { parts, params: new URLSearchParams(query) };
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  showBanner("");
  const { parts, params } = parse();
  let page = jobs;
  let nav = "jobs";
  if (parts[0] === "new") [page, nav] = [newJob, "new"];
  else if (parts[0] === "uploads") [page, nav] = [uploads, "uploads"];
  else if (parts[0] === "jobs" && parts[1]) {
    page = detail;
    params.set("id", decodeURIComponent(parts[1]));
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  try {
    cleanup = (await page.render(main, params)) || null;
  } catch (err) {
    showBanner(err.message || String(err));
  }
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
    document.title = `${heading.textContent} · Pravah`;
  }
}

// The caller's role decides which controls show: a viewer sees no "New job",
// "Uploads" or "Cancel job" (the server would answer 403 anyway).
async function loadRole() {
  try {
    const me = await request("GET", "/keys/me");
    document.body.dataset.role = me.role;
    return me;
  } catch {
    delete document.body.dataset.role;
    return null;
  }
}

function setupSignin() {
  const form = document.getElementById("signin");
  const input = document.getElementById("api-key");
  const out = document.getElementById("signout-button");
  const sync = () => {
    const on = Boolean(apiKey());
    input.hidden = on;
    form.querySelector("label").textContent = on ? "Signed in with an API key" : "API key";
    loadRole().then((me) => {
      if (me && on) {
        form.querySelector("label").textContent = `Signed in: ${me.name} (${me.role})`;
      }
    });
    document.getElementById("signin-button").hidden = on;
    out.hidden = !on;
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey(input.value.trim());
    input.value = "";
    sync();
    route();
  });
  out.addEventListener("click", () => {
    setApiKey("");
    sync();
    route();
  });
  window.addEventListener("pravah:unauthorized", () => {
    showBanner("This server needs an API key: enter it in the box at the top and sign in.");
    input.hidden = false;
    input.focus();
  });
  sync();
}

setupSignin();
window.addEventListener("hashchange", route);
route();
