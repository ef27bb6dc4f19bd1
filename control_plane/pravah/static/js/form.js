// Form fields from a JSON Schema (the task options served by GET /config).
//
// Each property becomes one labelled control: enum -> select, boolean ->
// checkbox, integer/number -> number input with min/max, array of strings ->
// comma list, string -> text input, anything else -> a JSON text area. The
// page checks what the browser can (required, type, bounds); the API checks
// the rest and its message is shown under the same field (`fieldError`).

import { h } from "./dom.js";

let uid = 0;

function optionLabel(value) {
  if (value === "\t") return "tab (\\t)";
  if (value === " ") return "space";
  if (value === "") return "(empty)";
  return String(value);
}

// A labelled field wrapper with a hint and an error slot; `name` is the
// dotted request field ("source", "options.delimiter").
export function field(name, label, control, hint) {
  uid += 1;
  const id = control.id || `f-${uid}`;
  control.id = id;
  const errId = `${id}-error`;
  const hintId = `${id}-hint`;
  control.setAttribute("aria-describedby", hint ? `${hintId} ${errId}` : errId);
  const isCheck = control.type === "checkbox";
  const lab = h("label", { for: id, text: label });
  return h(
    `div.field${isCheck ? ".check" : ""}`,
    { "data-field": name },
    isCheck ? [control, lab] : [lab, control],
    hint ? h("p.hint", { id: hintId, text: hint }) : null,
    h("p.error", { id: errId, "aria-live": "polite" }),
  );
}

export function setFieldError(form, name, message) {
  // The most specific field wins: "options.delimiter", else "options", ...
  let key = name;
  let wrap = null;
  while (key && !(wrap = form.querySelector(`[data-field="${CSS.escape(key)}"]`))) {
    key = key.includes(".") ? key.slice(0, key.lastIndexOf(".")) : "";
  }
  if (!wrap) return false;
  wrap.classList.add("invalid");
  wrap.querySelector(".error").textContent = message;
  const control = wrap.querySelector("input, select, textarea");
  if (control) control.setAttribute("aria-invalid", "true");
  return true;
}

export function clearErrors(form) {
  for (const wrap of form.querySelectorAll(".field.invalid")) {
    wrap.classList.remove("invalid");
    wrap.querySelector(".error").textContent = "";
    wrap.querySelector("[aria-invalid]")?.removeAttribute("aria-invalid");
  }
}

function kind(prop) {
  if (Array.isArray(prop.enum)) return "enum";
  const t = Array.isArray(prop.type) ? prop.type.find((x) => x !== "null") : prop.type;
  if (t === "array" && (prop.items?.type === "string" || !prop.items)) return "list";
  return t || "json";
}

// Controls for every property of `schema`; returns {element, read()} where
// read() gives the options object (fields left at their default are omitted)
// or throws {field, message} for what the page itself can tell is wrong.
export function schemaFields(schema, prefix) {
  const props = schema?.properties || {};
  const required = new Set(schema?.required || []);
  const readers = [];
  const element = h("div.schema-fields");
  for (const [name, prop] of Object.entries(props)) {
    const dotted = `${prefix}.${name}`;
    const k = kind(prop);
    const label = prop.title || name.replace(/_/g, " ");
    const hint = prop.description || "";
    let control;
    let read;
    if (k === "enum") {
      control = h(
        "select",
        { name: dotted },
        required.has(name) || prop.default !== undefined ? null : h("option", { value: "", text: "(default)" }),
        prop.enum.map((v, i) =>
          h("option", { value: String(i), text: optionLabel(v), selected: v === prop.default }),
        ),
      );
      read = () => (control.value === "" ? undefined : prop.enum[Number(control.value)]);
    } else if (k === "boolean") {
      control = h("input", { type: "checkbox", name: dotted, checked: prop.default === true });
      read = () => control.checked;
    } else if (k === "integer" || k === "number") {
      control = h("input", {
        type: "number",
        name: dotted,
        inputmode: "numeric",
        min: prop.minimum ?? prop.exclusiveMinimum,
        max: prop.maximum ?? prop.exclusiveMaximum,
        step: k === "integer" ? 1 : "any",
        value: prop.default,
        required: required.has(name),
      });
      read = () => (control.value === "" ? undefined : Number(control.value));
    } else if (k === "list") {
      control = h("input", {
        type: "text",
        name: dotted,
        value: Array.isArray(prop.default) ? prop.default.join(", ") : "",
        placeholder: "comma separated",
      });
      read = () => {
        const items = control.value.split(",").map((x) => x.trim()).filter(Boolean);
        return items.length ? items : undefined;
      };
    } else if (k === "string") {
      control = h("input", {
        type: "text",
        name: dotted,
        value: prop.default ?? "",
        minlength: prop.minLength,
        maxlength: prop.maxLength,
        pattern: prop.pattern,
        required: required.has(name),
      });
      read = () => (control.value === "" ? undefined : control.value);
    } else {
      control = h("textarea", { name: dotted, rows: 3, placeholder: "JSON" });
      if (prop.default !== undefined) control.value = JSON.stringify(prop.default);
      read = () => {
        if (!control.value.trim()) return undefined;
        try {
          return JSON.parse(control.value);
        } catch (err) {
          throw { field: dotted, message: `not valid JSON: ${err.message}` };
        }
      };
    }
    element.append(field(dotted, label, control, hint));
    readers.push([name, read, prop, control, dotted]);
  }
  return {
    element,
    read() {
      const out = {};
      for (const [name, read, prop, control, dotted] of readers) {
        if (control.validity && !control.validity.valid) {
          throw { field: dotted, message: control.validationMessage };
        }
        const value = read();
        if (value === undefined) continue;
        if (JSON.stringify(value) === JSON.stringify(prop.default)) continue;
        out[name] = value;
      }
      return out;
    },
  };
}
