// The console's shell: sign-in, the hash routes (#/live, #/event/CHAIN/SEQ, #/secret?name=,
// #/principal?id=, #/integrity, #/alerts) and the header. Each page is a module whose
// render(main, params) builds its part of the page and may return a function that stops
// what it started (a stream, a poll) when the reader leaves.

import * as api from "./lib/api.js";
import { clear, el, message, utc } from "./lib/dom.js";
import * as alerts from "./pages/alerts.js";
import * as event from "./pages/event.js";
import * as integrity from "./pages/integrity.js";
import * as live from "./pages/live.js";
import * as principal from "./pages/principal.js";
import * as secret from "./pages/secret.js";

const PAGES = { live, event, secret, principal, integrity, alerts };
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session");
let stop = null;  // what the current page started
let signedIn = false;

function parseRoute() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?", 2);
  const [page, ...rest] = path.split("/").map(decodeURIComponent);
  return { page: page || "live", rest, params: new URLSearchParams(search || "") };
}

function leave() {
  if (typeof stop === "function") {
    try {
      stop();
    } catch (error) {
      console.warn("stopping the page failed", error);
    }
  }
  stop = null;
}

function show() {
  leave();
  if (!signedIn) return;
  const { page, rest, params } = parseRoute();
  const module = PAGES[page];
  for (const link of nav.querySelectorAll("a")) {
    const current = link.dataset.page === page || (page === "event" && link.dataset.page === "live");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  if (!module) {
    main.append(message("error", "No such page. ", el("a", { href: "#/live" }, "Go to the live stream")));
    return;
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · keyledger console`;
  stop = module.render(main, { rest, params });
}

function signedInAs(state) {
  signedIn = true;
  nav.hidden = false;
  sessionBox.hidden = false;
  const expires = document.getElementById("session-expires");
  expires.textContent = `session until ${utc(state.expires, { precision: "minutes" })}`;
  expires.title = `${new Date(state.expires.replace(/(\.\d{3})\d+/, "$1")).toLocaleString()} (local time)`;
}

function showSignIn(note) {
  leave();
  signedIn = false;
  nav.hidden = true;
  sessionBox.hidden = true;
  document.title = "Sign in · keyledger console";
  const input = el("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    minlength: "16",
    spellcheck: "false",
  });
  const problem = el("div", { id: "sign-in-problem", "aria-live": "polite" });
  const button = el("button", { type: "submit", class: "primary" }, "Sign in");
  const form = el(
    "form",
    { id: "sign-in", class: "card sign-in", method: "post", action: "/ui/session" },
    el("h1", {}, "keyledger console"),
    el("p", { class: "muted" }, "The audit trail of your secret stores: who read what, when, from where, and the proof that nobody edited it."),
    note ? message("info", note) : null,
    el("label", { for: "token" }, "Admin token"),
    input,
    el("p", { class: "hint muted" }, "The admin API's token (admin.token_file or KEYLEDGER_ADMIN_TOKEN; ", el("code", {}, "keyledger serve --dev"), " prints it). It is exchanged for a session cookie and not kept in the browser."),
    problem,
    button,
  );
  form.addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    button.disabled = true;
    clear(problem);
    try {
      const state = await api.signIn(input.value);
      input.value = "";
      signedInAs(state);
      if (!location.hash || location.hash === "#/sign-in") location.hash = "#/live";
      show();
    } catch (error) {
      problem.append(message("error", error.message));
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  clear(main).append(form);
  input.focus();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  leave();
  try {
    await api.signOut();
  } finally {
    showSignIn("You are signed out.");
  }
});

api.onSignedOut(() => {
  if (signedIn) showSignIn("Your session has ended: sign in again.");
});

window.addEventListener("hashchange", show);

async function start() {
  try {
    const state = await api.session();
    if (state.signed_in) {
      signedInAs(state);
      show();
      return;
    }
  } catch (error) {
    clear(main).append(message("error", `The admin API did not answer: ${error.message}`));
    return;
  }
  showSignIn();
}

start();
