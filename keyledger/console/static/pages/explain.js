// `policy explain` for a recorded call, from /v1/explain: what was decided then, what the
// policy in force now decides, and each rule's verdict.

import * as api from "../lib/api.js";
import { badge, cell, clear, el, message, table, text } from "../lib/dom.js";

export async function explanation(box, chain, seq) {
  clear(box).append(el("p", { class: "muted" }, "Asking the policy in force…"));
  let answer;
  try {
    answer = await api.get("/v1/explain", { chain, seq });
  } catch (error) {
    clear(box).append(message("error", error.message));
    return;
  }
  const then = answer.recorded;
  const now = answer.now;
  const same = answer.same_effect && answer.same_rule;
  const rules = (now.rules || []).map((rule) =>
    el(
      "tr",
      { class: rule.applies ? "applies" : null },
      cell(text(rule.id), { cls: "nowrap" }),
      cell(badge(rule.effect)),
      cell(rule.applies ? "applies" : "does not apply"),
      cell(text((rule.reasons || []).join("; ")), { optional: true }),
      cell(text(rule.source), { optional: true }),
    ),
  );
  clear(box).append(
    el(
      "section",
      { class: "card explain", "aria-label": "Explanation", id: "explain-result" },
      el("h2", {}, `Explained: event ${seq} of chain `, text(chain)),
      el(
        "dl",
        { class: "pairs" },
        el("dt", {}, "Recorded then"),
        el("dd", {}, badge(then.effect || "none"), " rule ", text(then.rule, "(none)"), el("div", { class: "muted" }, text(then.reason))),
        el("dt", {}, "Policy now"),
        el("dd", {}, badge(now.effect), " rule ", text(now.rule, "(none)"), el("div", { class: "muted" }, text(now.reason))),
        el("dt", {}, "Same decision"),
        el("dd", { id: "explain-same" }, same ? "yes" : "no", answer.same_policy ? " (same policy)" : " (the policy changed since)"),
      ),
      rules.length
        ? table(
            [{ label: "Rule" }, { label: "Effect" }, { label: "Verdict" }, { label: "Why", optional: true }, { label: "Where", optional: true }],
            rules,
          )
        : el("p", { class: "muted" }, "A listing is decided by whether any rule lets the principal list on the backend."),
    ),
  );
}
