// Integrity: each chain's end and newest checkpoint, each sink's lag, and a verification of
// the whole journal started from here (POST /v1/verify), its progress and its result.

import * as api from "../lib/api.js";
import { ago, badge, cell, clear, count, el, heading, message, table, text, time } from "../lib/dom.js";

const POLL_MS = 250;

function chainsTable(chains) {
  const rows = chains.map((c) =>
    el(
      "tr",
      {},
      cell([text(c.chain), c.local ? el("span", { class: "muted" }, " (this process)") : null]),
      cell(count(c.last_seq)),
      cell(time(c.last_time), { optional: true, cls: "nowrap" }),
      cell(c.checkpoint ? `seq ${count(c.checkpoint.seals_seq)}` : el("span", { class: "muted" }, "none yet")),
      cell(c.checkpoint ? el("span", { title: c.checkpoint.time }, ago(c.checkpoint.age_s)) : "—"),
      cell(count(c.unsealed), { optional: true }),
      cell(count(c.segments), { optional: true }),
    ),
  );
  return table(
    [
      { label: "Chain" },
      { label: "Last seq" },
      { label: "Last event (UTC)", optional: true },
      { label: "Last checkpoint" },
      { label: "Its age" },
      { label: "Unsealed", optional: true },
      { label: "Files", optional: true },
    ],
    rows,
    { empty: "No chain in the journal folder yet." },
  );
}

function sinksTable(sinks) {
  const rows = sinks.map((s) =>
    el(
      "tr",
      { class: s.alarm ? "alarm" : null },
      cell(text(s.sink)),
      cell(s.ready ? "ready" : "starting"),
      cell(count(s.shipped_seq), { optional: true }),
      cell(`${count(s.lag_events)} events`),
      cell(`${s.lag_seconds.toFixed(1)} s`),
      cell(s.alarm ? badge("alarm", "deny") : "ok"),
      cell(text(s.last_error), { optional: true }),
    ),
  );
  return table(
    [
      { label: "Sink" },
      { label: "State" },
      { label: "Shipped seq", optional: true },
      { label: "Lag" },
      { label: "Lag time" },
      { label: "Alarm" },
      { label: "Last error", optional: true },
    ],
    rows,
    { empty: "No remote sinks are configured (audit.sinks)." },
  );
}

function result(run) {
  const chains = run.chains.length;
  if (run.ok) {
    return el(
      "div",
      { class: "result result-pass", id: "verify-result", "data-ok": "true", role: "status" },
      el("strong", {}, "Intact. "),
      `${count(run.events)} events in ${chains} ${chains === 1 ? "chain" : "chains"} verified`,
      run.signatures_checked ? ", checkpoint signatures checked" : " (no signing key: signatures not checked)",
      ".",
      el("div", { class: "muted" }, "Finished ", time(run.finished), run.recorded_event ? ["; on record as event ", text(run.recorded_event)] : null, "."),
    );
  }
  const problems = run.problems.map((p) => el("li", {}, text(p)));
  return el(
    "div",
    { class: "result result-fail", id: "verify-result", "data-ok": "false", role: "alert" },
    el("strong", {}, run.error ? "The verification could not finish. " : "Modified: the journal does not verify. "),
    run.error ? text(run.error) : `${count(run.problems_total)} ${run.problems_total === 1 ? "problem" : "problems"}:`,
    problems.length ? el("ol", { class: "problems", id: "verify-problems" }, problems) : null,
    run.problems_total > problems.length ? el("p", { class: "muted" }, `and ${run.problems_total - problems.length} more`) : null,
    el("div", { class: "muted" }, "Finished ", time(run.finished), run.recorded_event ? ["; on record as event ", text(run.recorded_event)] : null, "."),
  );
}

export function render(main) {
  const button = el("button", { type: "button", class: "primary", id: "verify-now" }, "Verify now");
  const progress = el("progress", { id: "verify-progress", max: "1", value: "0", hidden: true });
  const progressText = el("span", { class: "muted", id: "verify-progress-text" });
  const outcome = el("div", { "aria-live": "polite" });
  const overview = el("div", { "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
  main.append(
    heading("Integrity"),
    overview,
    el(
      "section",
      { class: "card", "aria-labelledby": "verify-title" },
      el("h2", { id: "verify-title" }, "Verify the journal"),
      el("p", { class: "muted" }, "Recomputes every chain's hashes and checks every signed checkpoint, as keyledger audit verify does; the result is recorded in the journal."),
      el("div", { class: "controls" }, button, progress, progressText),
      outcome,
    ),
  );
  let timer = null;
  let gone = false;

  function showState(state) {
    const run = state.run;
    if (!run) return;
    if (state.state === "running") {
      button.disabled = true;
      progress.hidden = false;
      progress.max = Math.max(run.progress.bytes_total, 1);
      progress.value = run.progress.bytes_checked;
      progressText.textContent = `checking: ${run.progress.chains_checked} of ${run.progress.chains_total} chains, ${count(run.progress.bytes_checked)} of ${count(run.progress.bytes_total)} bytes`;
      return;
    }
    button.disabled = false;
    progress.hidden = true;
    progressText.textContent = "";
    clear(outcome).append(result(run));
  }

  async function poll() {
    timer = null;
    try {
      const state = await api.get("/v1/verify");
      if (gone) return;
      showState(state);
      if (state.state === "running") timer = setTimeout(poll, POLL_MS);
      else loadOverview();
    } catch (error) {
      if (!gone) clear(outcome).append(message("error", error.message));
    }
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    clear(outcome);
    progress.hidden = false;
    progress.value = 0;
    progressText.textContent = "starting…";
    try {
      showState(await api.post("/v1/verify"));
    } catch (error) {
      if (error.status !== 409) {
        button.disabled = false;
        progress.hidden = true;
        progressText.textContent = "";
        clear(outcome).append(message("error", error.message));
        return;
      }
    }
    poll();
  });

  function loadOverview() {
    api.get("/v1/integrity").then(
      (state) => {
        if (gone) return;
        clear(overview).append(
          el("h2", {}, "Chains"),
          chainsTable(state.chains),
          el("h2", {}, "Remote copies"),
          sinksTable(state.sinks),
        );
        if (state.verification.state === "running" && timer === null) poll();
        else if (state.verification.state === "done" && !outcome.hasChildNodes()) showState(state.verification);
      },
      (error) => {
        if (!gone) clear(overview).append(message("error", error.message));
      },
    );
  }
  loadOverview();

  return () => {
    gone = true;
    if (timer !== null) clearTimeout(timer);
  };
}
