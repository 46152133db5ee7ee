// Secrets: without a name, every secret touched in the window (/v1/report); with one, who
// accessed it, how often, first and last time, denials, a chart of accesses over time and
// its newest events (/v1/secret).

import * as api from "../lib/api.js";
import { barChart } from "../lib/chart.js";
import {
  badge, cell, clear, count, el, heading, linkRow, message, principalLink, route, table, text,
  time, windowPicker,
} from "../lib/dom.js";

function stat(label, value, id) {
  return el("div", { class: "stat", id }, el("div", { class: "stat-value" }, value), el("div", { class: "stat-label" }, label));
}

function secretCell(call) {
  if (call.type !== "access" && call.type !== "auth_failure") return text(null);
  if (call.secret === null || call.secret === undefined) return text(null, "(listing)");
  return el("a", { href: route("secret", { name: call.secret, backend: call.backend }) }, text(call.secret));
}

export function recentTable(recent, { showSecret = false, showPrincipal = true, explain = null } = {}) {
  const columns = [
    { label: "Time (UTC)" },
    { label: "Effect" },
    { label: "Action" },
    showSecret ? { label: "Secret" } : null,
    showPrincipal ? { label: "Principal" } : null,
    { label: "Source", optional: true },
    { label: "Auth", optional: true },
    { label: "Rule" },
    explain ? { label: "Explain" } : null,
  ].filter(Boolean);
  const rows = recent.map((call) => {
    const cells = [
      cell(time(call.time), { cls: "nowrap" }),
      cell(call.effect ? badge(call.effect) : text(null)),
      cell(call.type === "access" ? text(call.action) : el("span", { class: "muted" }, text(call.type))),
      showSecret ? cell(secretCell(call)) : null,
      showPrincipal ? cell(principalLink(call.principal)) : null,
      cell(text(call.source_ip), { optional: true }),
      cell(text(call.auth_method), { optional: true }),
      cell(call.type === "access" ? text(call.rule, "(none)") : text(null), { cls: "nowrap" }),
      explain ? cell(explain(call)) : null,
    ].filter(Boolean);
    return linkRow(route(`event/${encodeURIComponent(call.chain)}/${call.seq}`), cells, `event ${call.seq} of chain ${call.chain}`);
  });
  return table(columns, rows, { empty: "No calls in this window." });
}

function sumHistograms(entries, length) {
  const total = new Array(length).fill(0);
  for (const entry of entries) entry.histogram.forEach((n, i) => (total[i] += n));
  return total;
}

const HOUR = 3600 * 1000;

// The report's buckets run from the first event's hour to the last's; a chart of the
// window shows the quiet hours too (hourly windows up to a week; days are left as they are).
function overWindow(answer, counts) {
  if (answer.bucket !== "hour") return { buckets: answer.buckets, counts };
  const since = Date.parse(answer.window.since.replace(/(\.\d{3})\d+/, "$1"));
  const until = Date.parse(answer.window.until.replace(/(\.\d{3})\d+/, "$1"));
  if (!(until - since <= 7 * 24 * HOUR)) return { buckets: answer.buckets, counts };
  const have = new Map(answer.buckets.map((b, i) => [Date.parse(b.replace(/(\.\d{3})\d+/, "$1")), counts[i]]));
  const buckets = [];
  const padded = [];
  for (let t = Math.floor(since / HOUR) * HOUR; t < until; t += HOUR) {
    buckets.push(new Date(t).toISOString());
    padded.push(have.get(t) || 0);
  }
  return { buckets, counts: padded };
}

function index(main, since) {
  main.append(
    heading("Secrets", windowPicker(since, (value) => (location.hash = route("secret", { since: value })))),
  );
  const find = el("input", { id: "secret-name", name: "name", placeholder: "exact name, e.g. prod/db/password", spellcheck: "false", autocomplete: "off" });
  const form = el("form", { class: "inline-form", role: "search" }, el("label", { for: "secret-name" }, "Secret"), find, el("button", { type: "submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (find.value) location.hash = route("secret", { name: find.value, since });
  });
  const body = el("div", { "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
  main.append(form, body);
  api.get("/v1/report", { since }).then(
    (report) => {
      const rows = report.secrets.map((s) =>
        linkRow(route("secret", { name: s.secret, backend: s.backend, since }), [
          cell(text(s.secret, "(listing)")),
          cell(text(s.backend), { optional: true }),
          cell(count(s.events)),
          cell(count(s.denied), { cls: s.denied ? "warn" : null }),
          cell(count(s.principals.length), { optional: true }),
          cell(time(s.last), { cls: "nowrap" }),
        ], `secret ${s.secret}`),
      );
      clear(body).append(
        table([{ label: "Secret" }, { label: "Backend", optional: true }, { label: "Calls" }, { label: "Denied" }, { label: "Principals", optional: true }, { label: "Last (UTC)" }], rows, { empty: "No secret was touched in this window." }),
      );
    },
    (error) => clear(body).append(message("error", error.message)),
  );
}

export function render(main, { params }) {
  const name = params.get("name");
  const backend = params.get("backend");
  const since = params.get("since") || "24h";
  if (!name) {
    index(main, since);
    return null;
  }
  main.append(
    heading(
      el("span", {}, "Secret ", el("span", { class: "name", id: "secret-title" }, text(name))),
      windowPicker(since, (value) => (location.hash = route("secret", { name, backend, since: value }))),
    ),
  );
  const body = el("div", { "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
  main.append(body);
  let gone = false;
  api.get("/v1/secret", { name, backend, since, limit: 50 }).then(
    (answer) => {
      if (gone) return;
      clear(body);
      const entries = answer.secrets;
      const totals = entries.reduce(
        (t, s) => ({ events: t.events + s.events, allowed: t.allowed + s.allowed, denied: t.denied + s.denied, errors: t.errors + s.errors }),
        { events: 0, allowed: 0, denied: 0, errors: 0 },
      );
      const firsts = entries.map((s) => s.first).filter(Boolean).sort();
      const lasts = entries.map((s) => s.last).filter(Boolean).sort();
      const principals = entries.flatMap((s) => s.principals);
      body.append(
        el(
          "div",
          { class: "stats" },
          stat("calls", count(totals.events), "stat-events"),
          stat("allowed", count(totals.allowed)),
          stat("denied", count(totals.denied), "stat-denied"),
          stat("errors", count(totals.errors)),
          stat("principals", count(new Set(principals.map((p) => p.principal)).size)),
          stat("first (UTC)", firsts.length ? time(firsts[0], { precision: "minutes" }) : "—"),
          stat("last (UTC)", lasts.length ? time(lasts[lasts.length - 1], { precision: "minutes" }) : "—"),
        ),
      );
      if (answer.buckets.length) {
        const per = answer.bucket === "day" ? "day" : "hour";
        const figure = el("figure", { class: "card figure", id: "secret-chart" });
        body.append(figure);  // placed first: the chart is drawn at the width it gets
        const series = overWindow(answer, sumHistograms(entries, answer.buckets.length));
        figure.append(
          barChart({ ...series, bucket: answer.bucket, label: `Allowed accesses per ${per}`, width: figure.clientWidth - 34 }),
          el("figcaption", { class: "muted" }, `Allowed accesses per ${per} (UTC)`),
        );
      } else {
        body.append(el("p", { class: "muted" }, "No calls to this secret in the window."));
      }
      const who = principals.map((p) =>
        linkRow(route("principal", { id: p.principal ?? "", since }), [
          cell(principalLink(p.principal)),
          cell(count(p.events)),
          cell(count(p.allowed), { optional: true }),
          cell(count(p.denied), { cls: p.denied ? "warn" : null }),
          cell(count(p.errors), { optional: true }),
          cell(time(p.first), { optional: true, cls: "nowrap" }),
          cell(time(p.last), { cls: "nowrap" }),
        ], `principal ${p.principal}`),
      );
      body.append(
        el("h2", {}, "Who accessed it"),
        table([{ label: "Principal" }, { label: "Calls" }, { label: "Allowed", optional: true }, { label: "Denied" }, { label: "Errors", optional: true }, { label: "First (UTC)", optional: true }, { label: "Last (UTC)" }], who, { empty: "Nobody in this window." }),
        el("h2", {}, "Newest calls"),
        recentTable(answer.recent),
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
