// Browser runs: start a smoke, flow or marketing check, follow it live, see its screenshots side by
// side and its findings as lists; the workspace's allowlist. Each control calls one documented route.
import { api, stream } from "./api.js";
import { h } from "./dom.js";
import { state, go } from "./main.js";

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const pill = (status) => h("span", { class: `pill ${status === "passed" ? "ok" : ["failed", "cancelled"].includes(status) ? "bad" : ""}`, text: status });

function list(title, items, show) {
  if (!items?.length) return null;
  return h("div", {}, h("h3", { text: `${title} (${items.length})` }), h("ul", { class: "findings" }, ...items.map((x) => h("li", {}, show(x)))));
}

export async function browserView() {
  const rows = h("tbody");
  const msg = h("p", { role: "status" });
  const load = async () => {
    const r = await api("GET", `/api/browser/runs?ws_id=${state.ws}&limit=50`);
    rows.replaceChildren(...r.items.map((x) => h("tr", {},
      h("td", {}, h("a", { href: `/w/${state.ws}/browser-run/${x.id}`, onclick: (e) => { e.preventDefault(); go(`/w/${state.ws}/browser-run/${x.id}`); } }, x.url)),
      h("td", { text: x.kind }), h("td", {}, pill(x.status)), h("td", { text: String(x.screenshots.length) }), h("td", { text: when(x.created_at) }))));
    if (!r.items.length) rows.append(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No browser runs yet." })));
  };
  const steps = h("textarea", { name: "steps", rows: 5, "aria-label": "Flow steps (JSON)", placeholder: '[{"click": "a.signup"}, {"type": {"selector": "#email", "text": "a@example.com"}}, {"expect": {"selector": "h1", "text": "Welcome"}}]' });
  const kind = h("select", { name: "kind", "aria-label": "Kind" }, ...[["smoke", "Smoke: does it load?"], ["flow", "Flow: steps"], ["marketing", "Marketing: three widths and checks"]].map(([v, t]) => h("option", { value: v, text: t })));
  const stepsRow = h("label", { hidden: true }, "Steps (JSON)", steps);
  kind.onchange = () => { stepsRow.hidden = kind.value !== "flow"; };
  const form = h("form", { class: "stack", "aria-label": "Run a browser check" },
    h("label", {}, "URL", h("input", { name: "url", type: "url", required: true, placeholder: "https://staging.example.com/" })),
    h("label", {}, "Kind", kind), stepsRow, h("button", { type: "submit" }, "Run"), msg);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { ws_id: state.ws, kind: f.get("kind"), url: f.get("url") };
    try {
      if (body.kind === "flow") body.steps = JSON.parse(f.get("steps") || "[]");
      const r = await api("POST", "/api/browser/run", body, { accept: "application/json" });
      go(`/w/${state.ws}/browser-run/${r.run_id}`);
    } catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  // The allowlist, one origin per line ("pattern  note").
  const allow = h("textarea", { rows: 4, "aria-label": "Allowed origins, one per line" });
  const allowMsg = h("p", { role: "status" });
  const a = await api("GET", `/api/browser/allowlist?ws_id=${state.ws}`);
  allow.value = a.entries.map((x) => (x.note ? `${x.pattern}  ${x.note}` : x.pattern)).join("\n");
  const save = h("button", { type: "button" }, "Save the allowlist");
  save.onclick = async () => {
    const entries = allow.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => { const [pattern, ...note] = l.split(/\s+/); return { pattern, note: note.join(" ") }; });
    try { await api("PUT", "/api/browser/allowlist", { ws_id: state.ws, entries }); allowMsg.textContent = "Saved."; allowMsg.className = "ok"; }
    catch (err) { allowMsg.textContent = err.message; allowMsg.className = "bad"; }
  };
  await load();
  const table = h("table", { class: "table", "aria-label": "Browser runs" }, h("thead", {}, h("tr", {}, ...["URL", "Kind", "Status", "Screenshots", "Started"].map((t) => h("th", { text: t })))), rows);
  return {
    el: h("section", { class: "pad" }, h("h1", { text: "Browser checks" }), form, h("h2", { text: "Runs" }), table,
      h("h2", { text: "Allowed origins" }), h("p", { class: "muted", text: "Pages may load only these origins (https://*.example.com, http://127.0.0.1:8080, a port of * for any); private addresses also need --allow-private-network." }),
      allow, save, allowMsg),
    title: "Browser", onShow: load,
  };
}

export async function browserRunView(id) {
  const status = h("p", { role: "status" });
  const shots = h("div", { class: "shots" });
  const findings = h("div");
  const live = h("ol", { class: "feed", "aria-label": "Events" });
  let es = null;
  const render = async () => {
    const r = await api("GET", `/api/browser/runs/${id}?ws_id=${state.ws}`);
    const s = r.result || {};
    status.replaceChildren(pill(r.status), ` ${r.kind} · ${r.url}`, s.http_status ? ` · HTTP ${s.http_status}` : "", s.title ? ` · “${s.title}”` : "", s.error ? ` · ${s.error}` : "");
    shots.replaceChildren(...r.screenshots.map((x) => h("figure", {}, h("img", { src: x.url, alt: `Screenshot: ${x.name} (${x.width}×${x.height})`, loading: "lazy" }), h("figcaption", { text: `${x.name} · ${x.width}×${x.height}` }))));
    const t = s.timings || {};
    findings.replaceChildren(...[
      Object.keys(t).length ? h("p", { class: "muted", text: ["ttfb_ms", "dom_content_loaded_ms", "load_ms", "lcp_ms"].filter((k) => t[k] !== null && t[k] !== undefined).map((k) => `${k.replace("_ms", "").replaceAll("_", " ")} ${t[k]} ms`).join(" · ") }) : null,
      list("Checks", s.checks, (c) => h("span", {}, h("span", { class: `pill ${c.ok ? "ok" : "bad"}`, text: c.ok ? "ok" : "fix" }), ` ${c.check}: ${c.detail}`)),
      list("Steps", s.steps, (x) => h("span", {}, h("span", { class: `pill ${x.ok ? "ok" : "bad"}`, text: x.ok ? "ok" : "failed" }), ` ${x.step.action} ${x.step.selector || x.step.url || x.step.key || x.step.name || ""} · ${x.duration_ms} ms${x.error ? ` · ${x.error}` : ""}`)),
      list("Console errors", s.console_errors, (x) => x.text),
      list("Failed requests", s.failed_requests, (x) => `${x.url} · ${x.error}`),
      list("Blocked requests", s.blocked_requests, (x) => `${x.url} · ${x.reason}`),
      list("Broken links", s.broken_links, (x) => `${x.url} · ${x.status || x.error}`),
      list("Images without alt", s.images_without_alt, (x) => x),
    ].filter(Boolean));
    return r;
  };
  const r = await render();
  if (!["passed", "failed", "cancelled"].includes(r.status)) {
    es = stream(`/api/browser/runs/${id}/events?ws_id=${state.ws}`, {});
    for (const type of ["browser.started", "browser.step", "browser.console", "browser.request_failed", "browser.screenshot"]) {
      es.addEventListener(type, (e) => { const d = JSON.parse(e.data); live.append(h("li", {}, h("span", { class: "pill", text: type.replace("browser.", "") }), " ", d.text || d.url || d.name || d.step?.action || "")); });
    }
    es.addEventListener("browser.completed", () => { es.close(); render(); });
  }
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  cancel.onclick = async () => { try { await api("POST", `/api/browser/runs/${id}/cancel?ws_id=${state.ws}`); } catch (e) { status.append(` · ${e.message}`); } };
  return { el: h("section", { class: "pad" }, h("h1", { text: "Browser run" }), status, h("div", { class: "row" }, cancel), live, shots, findings), title: "Browser run", close: () => es?.close() };
}
