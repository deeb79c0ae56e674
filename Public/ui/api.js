// Kiln's documented API and nothing else: JSON in and out, the CSRF token for cookie sessions, and
// step-up: an action answered 401 step_up_required asks for the password or a code, then is retried once.
import { $ } from "./dom.js";

let csrf = null;

export class APIError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.details = body?.error?.details;
  }
}

/// The session's CSRF token, for requests made with fetch directly (event streams of a POST).
export function csrfToken() { return csrf; }

export async function session() {
  const r = await fetch("/api/auth/session", { credentials: "same-origin" });
  if (!r.ok) return null;
  const s = await r.json();
  csrf = s.csrf_token || csrf;
  return s;
}

export async function api(method, path, body, { stepUp = true, accept } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers["Accept"] = accept;
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  const json = r.status === 204 ? {} : await r.json().catch(() => ({}));
  if (json && json.csrf_token) csrf = json.csrf_token;
  if (r.ok) return json;
  if (r.status === 401 && json?.error?.code === "step_up_required" && stepUp) {
    await askStepUp();
    return api(method, path, body, { stepUp: false, accept });
  }
  if (r.status === 401 && json?.error?.code !== "step_up_required") {
    location.href = "/login.html?next=" + encodeURIComponent(location.pathname + location.search + location.hash);
  }
  throw new APIError(r.status, json);
}

// The step-up dialog: resolves once POST /api/auth/step-up accepted the secret, rejects on cancel.
function askStepUp() {
  const dlg = $("#dlg-stepup"), form = $("#stepup-form"), err = $("#stepup-error");
  err.textContent = "";
  form.reset();
  return new Promise((resolve, reject) => {
    const done = (ok, e) => { form.onsubmit = null; $("#stepup-cancel").onclick = null; dlg.close(); ok ? resolve() : reject(e); };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const secret = new FormData(form).get("secret");
      const body = /^[0-9]{6}$/.test(secret) || /^[a-z0-9]{4,5}-[a-z0-9]{4,5}$/i.test(secret) ? { code: secret } : { password: secret };
      try { await api("POST", "/api/auth/step-up", body, { stepUp: false }); done(true); }
      catch (e) { err.textContent = e.message; }
    };
    $("#stepup-cancel").onclick = () => done(false, new APIError(401, { error: { code: "step_up_required", message: "Step-up cancelled" } }));
    dlg.showModal();
    form.querySelector("input").focus();
  });
}

// Every open stream. A page kept in the back/forward cache would keep their connections open, and a
// browser allows only six to one server (the next page would wait for one forever): they are closed
// when the page is left, and a page brought back from that cache is loaded afresh.
const streams = new Set();
window.addEventListener("pagehide", () => { for (const es of streams) es.close(); streams.clear(); });
window.addEventListener("pageshow", (e) => { if (e.persisted) location.reload(); });

// A Server-Sent Events stream (cookies included); `on` maps event names to handlers of parsed data.
export function stream(path, on) {
  const es = new EventSource(path, { withCredentials: true });
  for (const [name, fn] of Object.entries(on)) es.addEventListener(name, (e) => fn(JSON.parse(e.data), e));
  streams.add(es);
  const close = es.close.bind(es);
  es.close = () => { streams.delete(es); close(); };
  return es;
}
