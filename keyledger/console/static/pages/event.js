// One event, every field of it, as the journal holds it; and, for an access decided by
// policy, the policy in force now asked about the same call (/v1/explain).

import * as api from "../lib/api.js";
import {
  badge, clear, effectOf, el, heading, message, principalLink, route, secretLink, text, time,
  visible,
} from "../lib/dom.js";
import { explanation } from "./explain.js";

// [path, value] for every leaf of the record, in the journal's order.
function leaves(value, prefix = "") {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = Object.entries(value);
    if (entries.length === 0) return [[prefix, "{}"]];
    return entries.flatMap(([key, inner]) => leaves(inner, prefix ? `${prefix}.${key}` : key));
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return [[prefix, "[]"]];
    if (value.every((v) => v === null || typeof v !== "object")) return [[prefix, value]];
    return value.flatMap((inner, i) => leaves(inner, `${prefix}[${i}]`));
  }
  return [[prefix, value]];
}

function shown(value) {
  if (value === null) return el("span", { class: "muted" }, "null");
  if (Array.isArray(value)) return value.length ? value.map((v, i) => [i ? ", " : "", text(v)]) : "[]";
  if (typeof value === "boolean" || typeof value === "number") return el("span", { class: "literal" }, String(value));
  return text(value, '""');
}

export function fields(record) {
  const rows = leaves(record).map(([name, value]) =>
    el("tr", {}, el("th", { scope: "row" }, visible(name)), el("td", {}, shown(value))),
  );
  return el("div", { class: "table-wrap" }, el("table", { class: "fields", id: "event-fields" }, el("tbody", {}, rows)));
}

export function render(main, { rest }) {
  const [chain, seq] = rest;
  const title = `Event ${seq ?? "?"} of chain ${chain ?? "?"}`;
  main.append(heading(title));
  const body = el("div", { "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
  main.append(body);
  let gone = false;

  api.get(api.path("v1", "events", chain, seq)).then(
    (record) => {
      if (gone) return;
      clear(body);
      const effect = effectOf(record);
      const resource = record.resource || {};
      const summary = el(
        "div",
        { class: "card summary", id: "event-summary" },
        el("div", {}, time(record.time)),
        el("div", {}, effect ? badge(effect) : badge(record.type, "none"), " ", text(record.type), record.action ? [" · ", text(record.action)] : null),
        resource.secret !== undefined ? el("div", {}, "secret ", secretLink(resource.secret, resource.backend)) : null,
        record.principal ? el("div", {}, "principal ", principalLink(record.principal.id)) : null,
        record.decision ? el("div", {}, "rule ", text(record.decision.rule, "(none)"), el("span", { class: "muted" }, " — ", text(record.decision.reason))) : null,
      );
      const explainBox = el("div", { id: "explain" });
      const actions = el("div", { class: "controls" });
      if (record.type === "access" && record.principal && record.action) {
        const button = el("button", { type: "button", id: "explain-button" }, "Explain with today's policy");
        button.addEventListener("click", () => explanation(explainBox, record.chain.id, record.chain.seq));
        actions.append(button);
      }
      actions.append(el("a", { href: route("live"), class: "button-link" }, "Back to the live stream"));
      const raw = el("pre", { class: "raw", id: "event-raw", tabindex: "0" }, text(JSON.stringify(record, null, 2)));
      body.append(
        summary,
        actions,
        explainBox,
        el("h2", {}, "Every field"),
        fields(record),
        el("details", {}, el("summary", {}, "As the journal holds it (JSON)"), raw),
      );
    },
    (error) => {
      if (!gone) clear(body).append(message("error", error.message));
    },
  );
  return () => {
    gone = true;
  };
}
