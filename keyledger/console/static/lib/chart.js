// A bar chart of counts over time, drawn as SVG through the DOM (no library, no markup).
// Colours come from console.css (classes), so it follows the light or dark scheme.

import { el, utc } from "./dom.js";

const H = 220;
const PAD = { top: 14, right: 12, bottom: 34, left: 44 };

function niceMax(n) {
  if (n <= 5) return Math.max(n, 1);
  const step = 10 ** Math.floor(Math.log10(n));
  return Math.ceil(n / step) * step;
}

// buckets: UTC times (each bucket's start); counts: one number per bucket; width: the
// pixels it will take (so that its text is drawn at the page's size, not scaled).
export function barChart({ buckets, counts, bucket, label, width = 720 }) {
  const W = Math.max(Math.round(width), 300);
  const total = counts.reduce((a, b) => a + b, 0);
  const svg = el("svg", {
    class: "chart",
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": `${label}: ${total} in ${buckets.length} ${bucket === "day" ? "days" : "hours"}`,
  });
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const max = niceMax(Math.max(0, ...counts));

  // Grid lines and their values: 0, half, max.
  for (const value of [0, max / 2, max]) {
    const y = PAD.top + plotH - (value / max) * plotH;
    svg.append(
      el("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }),
      el("text", { class: "axis", x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, String(Math.round(value * 10) / 10)),
    );
  }

  const n = Math.max(buckets.length, 1);
  const slot = plotW / n;
  const barW = Math.max(Math.min(slot * 0.8, 48), 1);
  buckets.forEach((start, i) => {
    const value = counts[i] || 0;
    const h = (value / max) * plotH;
    const x = PAD.left + i * slot + (slot - barW) / 2;
    const y = PAD.top + plotH - h;
    const when = utc(start, { precision: "minutes" });
    svg.append(
      el(
        "rect",
        { class: "bar", x, y, width: barW, height: Math.max(h, value > 0 ? 1 : 0), "data-count": value },
        el("title", {}, `${when}: ${value}`),
      ),
    );
  });

  // The first and last bucket on the time axis (and the middle one when there is room).
  const marks = buckets.length > 2 ? [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1] : buckets.map((_, i) => i);
  for (const i of new Set(marks)) {
    const x = PAD.left + i * slot + slot / 2;
    const anchor = marks.length > 1 && i === 0 ? "start" : i === buckets.length - 1 && marks.length > 1 ? "end" : "middle";
    const shown = bucket === "day" ? utc(buckets[i]).slice(0, 10) : utc(buckets[i], { precision: "minutes" }).slice(5);
    svg.append(el("text", { class: "axis", x: anchor === "start" ? PAD.left : anchor === "end" ? W - PAD.right : x, y: H - 12, "text-anchor": anchor }, shown));
  }
  svg.append(el("line", { class: "baseline", x1: PAD.left, x2: W - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH }));
  return svg;
}
