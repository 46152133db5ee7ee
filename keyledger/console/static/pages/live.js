// Live: the audit stream as a table, newest first, as events become durable.
//
// An EventSource on /v1/audit/stream with the filters of `audit tail` (in the route, so a
// filtered view can be bookmarked); it first replays the last REPLAY matching events. Paused,
// events are held (and counted) and shown on resume. A row opens the full event.

import * as api from "../lib/api.js";
import {
  badge, cell, clear, effectOf, el, heading, linkRow, message, principalLink, route,
  secretLink, table, text, time,
} from "../lib/dom.js";

const REPLAY = 50;
const KEPT = 500;  // rows on the page; older ones are dropped from the top's far end
const FILTERS = ["principal", "secret", "action", "effect", "protocol", "type", "since"];
const CHOICES = {
  action: ["read", "describe", "list", "write", "rotate", "delete"],
  effect: ["allow", "deny"],
  type: ["access", "auth_failure", "policy_reload", "checkpoint", "alert", "lifecycle"],
};
const COLUMNS = [
  { label: "Time (UTC)" },
  { label: "Effect" },
  { label: "Action", optional: "narrow" },
  { label: "Secret" },
  { label: "Principal" },
  { label: "Source", optional: true },
  { label: "Call", optional: true },
  { label: "Outcome", optional: true },
];

function filterForm(params) {
  const fields = FILTERS.map((name) => {
    const value = params.get(name) || "";
    let input;
    if (CHOICES[name]) {
      input = el(
        "select",
        { id: `f-${name}`, name },
        el("option", { value: "" }, "any"),
        CHOICES[name].map((c) => el("option", { value: c, selected: c === value }, c)),
      );
    } else {
      const hints = { principal: "svc-*", secret: "prod/*", protocol: "aws-json", since: "15m, 2h" };
      input = el("input", { id: `f-${name}`, name, value, placeholder: hints[name], spellcheck: "false", autocomplete: "off" });
    }
    return el("div", { class: "field" }, el("label", { for: `f-${name}` }, name), input);
  });
  const form = el(
    "form",
    { class: "filters", id: "filters", role: "search", "aria-label": "Filter the stream" },
    fields,
    el("div", { class: "field actions" },
      el("button", { type: "submit", class: "primary" }, "Apply"),
      el("button", { type: "reset", id: "clear-filters" }, "Clear")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = {};
    for (const name of FILTERS) chosen[name] = form.elements[name].value.trim();
    location.hash = route("live", chosen);
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    location.hash = route("live");
  });
  return form;
}

export function eventRow(record) {
  const chain = record.chain || {};
  const request = record.request || {};
  const who = record.principal || {};
  const outcome = record.outcome || {};
  const resource = record.resource || {};
  const effect = effectOf(record);
  const kind = record.type === "access" ? record.action : record.type;
  const detailEvent = record.detail && typeof record.detail.event === "string" ? record.detail.event : null;
  const call = request.protocol ? `${request.protocol}/${request.operation ?? ""}` : null;
  const href = route(`event/${encodeURIComponent(chain.id)}/${chain.seq}`);
  return linkRow(
    href,
    [
      cell(time(record.time, { precision: "ms" }), { cls: "nowrap when" }),
      cell(effect ? badge(effect) : text(null)),
      cell(record.type === "access" ? text(kind) : el("span", { class: "muted" }, text(kind)), { optional: "narrow" }),
      cell(resource.secret !== undefined ? secretLink(resource.secret, resource.backend) : el("span", { class: "muted" }, text(detailEvent || record.type))),
      cell(who.id !== undefined ? principalLink(who.id) : text(null)),
      cell(text(request.source_ip), { optional: true }),
      cell(text(call), { optional: true }),
      cell(
        outcome.status ? [text(outcome.status), outcome.code ? [" ", el("span", { class: "muted" }, text(outcome.code))] : null] : text(null),
        { optional: true },
      ),
    ],
    `event ${chain.seq} of chain ${chain.id}`,
  );
}

export function render(main, { params }) {
  const status = el("span", { id: "live-status", class: "live-status", role: "status" }, "connecting…");
  const pause = el("button", { type: "button", id: "pause", "aria-pressed": "false" }, "Pause");
  const head = heading("Live audit stream", el("div", { class: "controls" }, status, pause));
  const rows = [];
  const box = table(COLUMNS, rows, { empty: "No matching events yet: they appear here as they happen." });
  box.classList.add("live");
  const tbody = box.querySelector("tbody");
  tbody.id = "live-rows";
  const problem = el("div", { "aria-live": "polite" });
  main.append(head, filterForm(params), problem, box);

  let paused = false;
  let held = [];
  let seen = 0;

  function setStatus(textValue, kind) {
    status.textContent = textValue;
    status.dataset.state = kind;
  }

  function add(records) {
    for (const record of records) {
      tbody.prepend(eventRow(record));
      seen += 1;
    }
    while (tbody.rows.length > KEPT) tbody.lastElementChild.remove();
    box.querySelector(".empty")?.remove();
  }

  const search = {};
  for (const name of FILTERS) {
    const value = params.get(name);
    if (value) search[name] = value;
  }
  search.last = String(REPLAY);
  const source = new EventSource("/v1/audit/stream" + api.query(search));
  source.addEventListener("open", () => setStatus(paused ? "paused" : "live", paused ? "paused" : "live"));
  source.addEventListener("audit", (frame) => {
    let record;
    try {
      record = JSON.parse(frame.data);
    } catch {
      return;
    }
    if (paused) {
      held.push(record);
      setStatus(`paused: ${held.length} new`, "paused");
    } else {
      add([record]);
    }
  });
  source.addEventListener("replayed", () => {
    if (!paused) setStatus("live", "live");
  });
  source.addEventListener("dropped", (frame) => {
    setStatus("dropped", "error");
    clear(problem).append(message("error", "The server dropped this stream: ", text(JSON.parse(frame.data).reason), ". Reload to reconnect."));
    source.close();
  });
  source.addEventListener("error", async () => {
    setStatus("reconnecting…", "error");
    // An EventSource hides the status: ask whether the session is still there (a 400
    // for a bad filter closes the stream for good).
    if (source.readyState === EventSource.CLOSED) {
      try {
        await api.get("/v1/events", { ...search, last: undefined, limit: 1 });
        clear(problem).append(message("error", "The stream closed. Reload to reconnect."));
      } catch (error) {
        clear(problem).append(message("error", error.message));
      }
    }
  });

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (paused) {
      setStatus("paused", "paused");
    } else {
      add(held);
      held = [];
      setStatus("live", "live");
    }
  });

  return () => source.close();
}
