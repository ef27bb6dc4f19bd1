// The one place that talks to the control plane (same origin).
//
// Every request goes through `request()`, which adds `Authorization: Bearer
// <key>` when an API key was entered in the sign-in box, and turns error
// bodies (`{"detail": ..., "field"?: ..., "errors"?: [...]}`) into ApiError.
// Server-sent events are read with fetch too (not EventSource), so the same
// header goes with them.

const KEY = "pravah.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY, value);
  else localStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.body = body || {};
  }

  // Dotted field names ("source", "options.delimiter", "filters.min_size")
  // mapped to messages: from the service's `field`, else from validation `errors`.
  fieldErrors() {
    const out = {};
    if (this.body.field) out[this.body.field] = this.message;
    for (const err of this.body.errors || []) {
      const loc = (err.loc || []).filter((p) => p !== "body").map(String);
      if (loc.length) out[loc.join(".")] = String(err.msg || "invalid").replace(/^Value error, /, "");
    }
    return out;
  }
}

export async function request(method, path, body, { raw = false } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    let payload = null;
    try {
      payload = await resp.json();
    } catch {
      payload = null;
    }
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("pravah:unauthorized"));
    throw new ApiError(resp.status, payload);
  }
  if (raw) return resp;
  return resp.status === 204 ? null : resp.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

// Read a server-sent event stream; call onEvent(name, data) per event.
// Reconnects after a dropped connection (every `retryMs`) until `signal`
// aborts or the server sends `end`. Returns a promise that settles then.
export async function streamEvents(path, onEvent, { signal, retryMs = 2000 } = {}) {
  while (!signal?.aborted) {
    try {
      const resp = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
      if (!resp.ok) {
        if (resp.status === 401) window.dispatchEvent(new CustomEvent("pravah:unauthorized"));
        throw new ApiError(resp.status, await resp.json().catch(() => null));
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue; // comments and pings
          if (name === "end") return;
          onEvent(name, JSON.parse(data.join("\n")));
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      if (err instanceof ApiError && err.status < 500) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

// Upload a File as the raw body of POST /uploads, reporting progress (0..1).
// XMLHttpRequest, because fetch cannot report upload progress.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/uploads?filename=${encodeURIComponent(file.name)}`);
    for (const [k, v] of Object.entries(headers({ "Content-Type": "application/octet-stream" }))) {
      xhr.setRequestHeader(k, v);
    }
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { detail: "the upload failed: network error" }));
    xhr.send(file);
  });
}

// Download a response as a file; with an API key the link cannot carry the
// header, so the body is fetched and saved through an object URL.
export async function download(path, filename) {
  const resp = await request("GET", path, undefined, { raw: true });
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
