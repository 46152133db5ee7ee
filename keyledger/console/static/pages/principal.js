// Principals: without an id, every principal seen in the window (from /v1/report); with one,
// what it read, from where, how it signed in, and its newest calls with the rule that decided
// each, each one explainable by the policy in force (/v1/principal, /v1/explain).

import * as api from "../lib/api.js";
import {
  cell, clear, count, el, heading, linkRow, message, route, table, text, time, windowPicker,
} from "../lib/dom.js";
import { explanation } from "./explain.js";
import { recentTable } from "./secret.js";

function index(main, since) {
  main.append(heading("Principals", windowPicker(since, (value) => (location.hash = route("principal", { since: value })))));
  const find = el("input", { id: "principal-id", name: "id", placeholder: "exact id, e.g. demo-app", spellcheck: "false", autocomplete: "off" });
  const form = el("form", { class: "inline-form", role: "search" }, el("label", { for: "principal-id" }, "Principal"), find, el("button", { type: "submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (find.value) location.hash = route("principal", { id: find.value, since });
  });
  const body = el("div", { "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
  main.append(form, body);
  api.get("/v1/report", { since }).then(
    (report) => {
      const by = new Map();
      for (const s of report.secrets) {
        for (const p of s.principals) {
          const seen = by.get(p.principal) || { events: 0, denied: 0, secrets: 0, last: null };
          seen.events += p.events;
          seen.denied += p.denied;
          seen.secrets += 1;
          if (!seen.last || p.last > seen.last) seen.last = p.last;
          by.set(p.principal, seen);
        }
      }
      const rows = [...by.entries()]
        .sort((a, b) => b[1].events - a[1].events)
        .map(([id, seen]) =>
          linkRow(route("principal", { id: id ?? "", since }), [
            cell(text(id, "(unknown)")),
            cell(count(seen.events)),
            cell(count(seen.denied), { cls: seen.denied ? "warn" : null }),
            cell(count(seen.secrets), { optional: true }),
            cell(time(seen.last), { cls: "nowrap" }),
          ], `principal ${id}`),
        );
      clear(body).append(
        table([{ label: "Principal" }, { label: "Calls" }, { label: "Denied" }, { label: "Secrets", optional: true }, { label: "Last (UTC)" }], rows, { empty: "No calls in this window." }),
      );
    },
    (error) => clear(body).append(message("error", error.message)),
  );
}

export function render(main, { params }) {
  const id = params.get("id");
  const since = params.get("since") || "24h";
  if (!id) {
    index(main, since);
    return null;
  }
  main.append(
    heading(
      el("span", {}, "Principal ", el("span", { class: "name", id: "principal-title" }, text(id))),
      windowPicker(since, (value) => (location.hash = route("principal", { id, since: value }))),
    ),
  );
  const body = el("div", { "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
  const explainBox = el("div", { id: "explain" });
  main.append(body);
  let gone = false;
  api.get("/v1/principal", { id, since, limit: 50 }).then(
    (answer) => {
      if (gone) return;
      clear(body);
      const effects = Object.entries(answer.effects).map(([effect, n]) => `${n} ${effect === "none" ? "undecided" : effect}`).join(", ");
      body.append(el("p", { class: "lead", id: "principal-summary" }, `${count(answer.events)} calls in the window: ${effects || "none"}.`));
      const secrets = answer.secrets.map((s) =>
        linkRow(route("secret", { name: s.secret, backend: s.backend, since }), [
          cell(text(s.secret, "(listing)")),
          cell(text(Object.keys(s.actions).join(", "))),
          cell(count(s.events)),
          cell(count(s.denied), { cls: s.denied ? "warn" : null }),
          cell(time(s.last), { optional: true, cls: "nowrap" }),
        ], `secret ${s.secret}`),
      );
      const sources = answer.sources.map((s) =>
        el("tr", {}, cell(text(s.source_ip, "(unknown)")), cell(text(s.country), { optional: true }), cell(count(s.events)), cell(time(s.last), { cls: "nowrap" })),
      );
      const methods = answer.auth_methods.map((m) =>
        el("tr", {}, cell(text(m.auth_method, "(none)")), cell(count(m.events)), cell(time(m.first), { optional: true, cls: "nowrap" }), cell(time(m.last), { cls: "nowrap" })),
      );
      const explain = (call) => {
        if (call.type !== "access" || !call.action || call.principal === null) return text(null);
        const button = el("button", { type: "button", class: "small explain-call", "data-seq": call.seq }, "Explain");
        button.addEventListener("click", async () => {
          await explanation(explainBox, call.chain, call.seq);
          explainBox.scrollIntoView({ block: "nearest" });
          explainBox.querySelector("h2")?.setAttribute("tabindex", "-1");
          explainBox.querySelector("h2")?.focus();
        });
        return button;
      };
      body.append(
        el("h2", {}, "What it touched"),
        table([{ label: "Secret" }, { label: "Actions" }, { label: "Calls" }, { label: "Denied" }, { label: "Last (UTC)", optional: true }], secrets, { empty: "No secret in this window." }),
        el(
          "div",
          { class: "columns" },
          el("section", {}, el("h2", {}, "From where"), table([{ label: "Source" }, { label: "Country", optional: true }, { label: "Calls" }, { label: "Last (UTC)" }], sources)),
          el("section", {}, el("h2", {}, "How it signed in"), table([{ label: "Method" }, { label: "Calls" }, { label: "First (UTC)", optional: true }, { label: "Last (UTC)" }], methods)),
        ),
        el("h2", {}, "Newest calls and the rule that decided each"),
        recentTable(answer.recent, { showSecret: true, showPrincipal: false, explain }),
        explainBox,
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
