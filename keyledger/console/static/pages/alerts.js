// Alerts: the alert events of the window, most severe first, each with the events that
// triggered it (/v1/alerts). keyledger keeps no acknowledged state: recent alerts are open.

import * as api from "../lib/api.js";
import { badge, clear, count, el, heading, message, route, table, text, time, windowPicker } from "../lib/dom.js";
import { eventRow } from "./live.js";

const SEVERITIES = ["critical", "high", "medium", "low", "info"];

function alertCard(alert) {
  const triggers = alert.events.map((ref) =>
    ref.event
      ? eventRow(ref.event)
      : el(
          "tr",
          {},
          el("td", { colspan: "8" }, el("a", { href: route(`event/${encodeURIComponent(ref.chain)}/${ref.seq}`) }, "event ", String(ref.seq), " of chain ", text(ref.chain))),
        ),
  );
  return el(
    "article",
    { class: `card alert alert-${SEVERITIES.includes(alert.severity) ? alert.severity : "info"}`, "aria-label": `alert ${alert.rule}` },
    el(
      "header",
      { class: "alert-head" },
      badge(alert.severity || "info", `sev-${alert.severity}`),
      el("strong", {}, text(alert.rule)),
      el("span", { class: "muted" }, time(alert.time)),
    ),
    el("p", { class: "alert-summary" }, text(alert.summary)),
    el(
      "p",
      { class: "muted" },
      "key ", text(alert.key),
      alert.suppressed ? ` · ${count(alert.suppressed)} repeats suppressed` : null,
      " · ",
      el("a", { href: route(`event/${encodeURIComponent(alert.chain)}/${alert.seq}`) }, "the alert event"),
    ),
    el("h3", {}, `Triggered by ${alert.events.length} ${alert.events.length === 1 ? "event" : "events"}`),
    table(
      [
        { label: "Time (UTC)" }, { label: "Effect" }, { label: "Action" }, { label: "Secret" }, { label: "Principal" },
        { label: "Source", optional: true }, { label: "Call", optional: true }, { label: "Outcome", optional: true },
      ],
      triggers,
      { empty: "No triggering events recorded." },
    ),
  );
}

export function render(main, { params }) {
  const since = params.get("since") || "7d";
  main.append(heading("Alerts", windowPicker(since, (value) => (location.hash = route("alerts", { since: value })), ["24h", "7d", "31d"])));
  const body = el("div", { "aria-live": "polite", id: "alerts" }, el("p", { class: "muted" }, "Loading…"));
  main.append(body);
  let gone = false;
  api.get("/v1/alerts", { since }).then(
    (answer) => {
      if (gone) return;
      clear(body);
      if (answer.alerts.length === 0) {
        body.append(message("info", "No alerts in this window."));
        return;
      }
      const tally = SEVERITIES.map((s) => [s, answer.alerts.filter((a) => a.severity === s).length]).filter(([, n]) => n);
      body.append(
        el("p", { class: "lead", id: "alerts-summary" }, tally.map(([s, n], i) => [i ? " · " : "", badge(s, `sev-${s}`), ` ${n}`])),
      );
      for (const severity of SEVERITIES) {
        const group = answer.alerts.filter((a) => a.severity === severity);
        if (group.length === 0) continue;
        body.append(el("section", { class: "severity-group", "aria-label": `${severity} alerts` }, el("h2", {}, `${severity[0].toUpperCase()}${severity.slice(1)}`), group.map(alertCard)));
      }
      const other = answer.alerts.filter((a) => !SEVERITIES.includes(a.severity));
      if (other.length) body.append(el("section", {}, el("h2", {}, "Other"), other.map(alertCard)));
    },
    (error) => {
      if (!gone) clear(body).append(message("error", error.message));
    },
  );
  return () => {
    gone = true;
  };
}
