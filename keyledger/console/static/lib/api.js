// The admin API, as the console calls it: same origin, the session cookie, JSON answers.
//
// The cookie is HttpOnly: this code never sees it, the browser sends it. A 401 means the
// session is over (signed out elsewhere, expired, the server restarted): the app then asks
// to sign in again.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = new Set();

// fn() is called whenever an answer says the session is gone.
export function onSignedOut(fn) {
  listeners.add(fn);
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) listeners.forEach((fn) => fn());
  if (!response.ok) {
    const reason = body && typeof body.error === "string" ? body.error : response.statusText;
    throw new ApiError(response.status, reason || `HTTP ${response.status}`);
  }
  return body;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const q = search.toString();
  return q ? "?" + q : "";
}

export async function get(path, params) {
  const response = await fetch(path + query(params), {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  return answer(response);
}

// A POST from this page: the browser adds Origin, which the server checks (CSRF).
export async function post(path, form) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json" },
    body: form ? new URLSearchParams(form) : undefined,
  });
  return answer(response);
}

export function session() {
  return get("/ui/session");
}

export function signIn(token) {
  return post("/ui/session", { token });
}

export function signOut() {
  return post("/ui/sign-out");
}

// Segments of a path, each encoded (chain ids are plain, but nothing is assumed).
export function path(...parts) {
  return "/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}
