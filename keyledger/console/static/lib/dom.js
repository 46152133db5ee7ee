// Building the page from data: elements and text nodes only, never HTML.
//
// Everything a caller chose (secret names, principal ids, user agents, reasons) reaches
// the page through text(), which makes control characters visible as escapes (\x1b, \u202e)
// in a marked span, so a name can neither run markup nor rewrite what the screen shows.

// C0 and C1 controls, DEL, zero-width and bidirectional marks, the BOM.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;

// The escape a control character is shown as: \x1b, \u202e.
function escapeOf(ch) {
  const code = ch.codePointAt(0);
  return code <= 0xff
    ? "\\x" + code.toString(16).padStart(2, "0")
    : "\\u" + code.toString(16).padStart(4, "0");
}

// A string with its invisible characters written as escapes (for titles and attributes).
export function visible(value) {
  return String(value).replace(INVISIBLE, escapeOf);
}

// Caller-chosen text as nodes: plain text, with each invisible character as an escape in
// a <span class="esc"> (so "\x1b" typed by a caller and a real ESC look different).
export function text(value, fallback = "—") {
  if (value === null || value === undefined || value === "") {
    return el("span", { class: "muted" }, fallback);
  }
  const s = String(value);
  const out = document.createDocumentFragment();
  let last = 0;
  for (const match of s.matchAll(INVISIBLE)) {
    if (match.index > last) out.append(document.createTextNode(s.slice(last, match.index)));
    out.append(el("span", { class: "esc", title: "control character" }, escapeOf(match[0])));
    last = match.index + match[0].length;
  }
  if (last < s.length) out.append(document.createTextNode(s.slice(last)));
  return out;
}

// el("a", {href: "#/x", class: "y"}, child, ...): children are nodes or strings (as text).
// Attributes are set one by one with setAttribute; on* handlers are attached as listeners.
export function el(tag, attrs = {}, ...children) {
  const node = tag === "svg" || SVG_TAGS.has(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "style") {
      throw new Error("no inline styles: use a class");  // the CSP forbids them anyway
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

const SVG_TAGS = new Set(["g", "rect", "line", "text", "title", "path", "polyline"]);

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

// -- times: UTC on the page, the reader's local time on hover --------------------------

function parsed(iso) {
  if (typeof iso !== "string") return null;
  // Microseconds are more than Date takes everywhere: keep milliseconds.
  const trimmed = iso.replace(/(\.\d{3})\d+/, "$1");
  const moment = new Date(trimmed);
  return Number.isNaN(moment.getTime()) ? null : moment;
}

const LENGTHS = { minutes: 16, seconds: 19, ms: 23 };

// "2026-12-08 02:38:36 UTC" (precision: minutes, seconds or ms).
export function utc(iso, { precision = "seconds" } = {}) {
  const moment = parsed(iso);
  if (moment === null) return String(iso ?? "—");
  return moment.toISOString().replace("T", " ").slice(0, LENGTHS[precision]) + " UTC";
}

// A <time> showing UTC, with the reader's local time as its title. Its date and zone are
// spans of their own, so that a narrow table can show the time of day alone.
export function time(iso, { precision = "seconds" } = {}) {
  const moment = parsed(iso);
  if (moment === null) return text(iso);
  const shown = utc(iso, { precision });
  return el(
    "time",
    { datetime: iso, title: moment.toLocaleString() + " (local time)" },
    el("span", { class: "date" }, shown.slice(0, 11)),
    shown.slice(11, -4),
    el("span", { class: "zone" }, " UTC"),
  );
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

export function count(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "—";
}

// -- common pieces ---------------------------------------------------------------------

export function badge(label, kind = label) {
  return el("span", { class: `badge badge-${String(kind).replace(/[^a-z_-]/g, "")}` }, text(label));
}

export function heading(title, ...rest) {
  return el("div", { class: "page-head" }, el("h1", {}, title), ...rest);
}

export function message(kind, ...content) {
  return el("p", { class: `message message-${kind}`, role: kind === "error" ? "alert" : "status" }, ...content);
}

// A table in a scrolling box; `columns` are {label, optional} (optional ones hide when narrow).
export function table(columns, rows, { caption, empty = "Nothing here yet." } = {}) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: optionalClass(c.optional) }, c.label)));
  const body = el("tbody", {}, rows);
  const box = el(
    "div",
    { class: "table-wrap" },
    el("table", {}, caption ? el("caption", {}, caption) : null, el("thead", {}, head), body),
  );
  if (rows.length === 0) box.append(el("p", { class: "muted empty" }, empty));
  return box;
}

// optional: true hides the column below 760 px, "narrow" below 480 px.
function optionalClass(optional) {
  return optional === "narrow" ? "opt-narrow" : optional ? "opt" : null;
}

export function cell(content, { optional = false, cls = null } = {}) {
  const classes = [optionalClass(optional), cls].filter(Boolean).join(" ") || null;
  return el("td", { class: classes }, content);
}

// A row that opens `href` on click or Enter, reachable with Tab and the arrow keys.
export function linkRow(href, cells, label) {
  const row = el("tr", { tabindex: "0", class: "link-row", "data-href": href, "aria-label": label }, cells);
  row.addEventListener("click", (event) => {
    if (event.target.closest("a, button")) return;  // a link or button inside does its own
    location.hash = href;
  });
  row.addEventListener("keydown", (event) => {
    if (event.target !== row) return;
    if (event.key === "Enter") {
      location.hash = href;
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
      if (next) next.focus();
      event.preventDefault();
    }
  });
  return row;
}

// "#/secret?name=..": the query string of a hash route, encoded.
export function route(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, value);
  }
  const q = query.toString();
  return `#/${path}${q ? "?" + q : ""}`;
}

export function secretLink(name, backend) {
  if (name === null || name === undefined) return text(null, "(listing)");
  return el("a", { href: route("secret", { name, backend }) }, text(name));
}

export function principalLink(id) {
  if (id === null || id === undefined) return text(null, "(unknown)");
  return el("a", { href: route("principal", { id }) }, text(id));
}

// The effect a record shows: its decision's, deny for a failed sign-in, else its type.
export function effectOf(record) {
  const effect = record?.decision?.effect;
  if (typeof effect === "string") return effect;
  if (record?.type === "auth_failure") return "deny";
  return null;
}

export function windowPicker(current, onChange, choices = ["1h", "24h", "7d", "31d"]) {
  const select = el(
    "select",
    { "aria-label": "Time window", id: "window" },
    choices.map((c) => el("option", { value: c, selected: c === current }, `last ${c}`)),
  );
  select.addEventListener("change", () => onChange(select.value));
  return el("label", { class: "inline" }, "Window ", select);
}
