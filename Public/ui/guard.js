// Secrets and policies pages: a workspace's secrets (names only until revealed with step-up) and
// its policy document (edited as JSON, saved with If-Match, tried with a dry run).
import { api, APIError } from "./api.js";
import { h } from "./dom.js";
import { state } from "./main.js";

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

export async function secretsView() {
  const rows = h("tbody"), msg = h("p", { role: "status" }), shown = h("p", { class: "once" });
  const load = async () => {
    const r = await api("GET", `/api/secrets?ws_id=${state.ws}`);
    rows.replaceChildren(...r.items.map((s) => h("tr", {}, h("td", {}, h("code", { text: s.name })), h("td", { text: String(s.version) }),
      h("td", { text: when(s.updated_at) }), h("td", { text: when(s.expires_at) }), h("td", { text: when(s.last_used_at) }),
      h("td", { class: "row" },
        h("button", { type: "button", class: "secondary", "aria-label": `Reveal ${s.name}`, onclick: () => reveal(s.name) }, "Reveal"),
        h("button", { type: "button", class: "secondary", "aria-label": `Delete ${s.name}`, onclick: () => remove(s.name) }, "Delete")))));
    if (!r.items.length) rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: "No secrets yet." })));
  };
  const say = (text, bad) => { msg.textContent = text; msg.className = bad ? "bad" : "ok"; };
  async function reveal(name) {
    const reason = prompt(`Why do you need the value of ${name}? (kept in the audit trail)`) || "";
    try {
      const r = await api("GET", `/api/secrets/${name}?ws_id=${state.ws}&reason=${encodeURIComponent(reason)}`);
      shown.replaceChildren(`${name} (version ${r.version}): `, h("code", { text: r.value }), " ",
        h("button", { type: "button", class: "secondary", onclick: () => shown.replaceChildren() }, "Hide"));
    } catch (e) { say(e.message, true); }
  }
  async function remove(name) {
    if (!confirm(`Delete ${name} and every kept version?`)) return;
    try { await api("DELETE", `/api/secrets/${name}?ws_id=${state.ws}`); say(`Deleted ${name}.`); load(); } catch (e) { say(e.message, true); }
  }
  const form = h("form", { class: "stack", "aria-label": "Set a secret" },
    h("label", {}, "Name (A-Z, 0-9, _)", h("input", { name: "name", required: true, pattern: "[A-Z_][A-Z0-9_]{0,127}", autocomplete: "off" })),
    h("label", {}, "Value", h("input", { name: "value", type: "password", required: true, autocomplete: "new-password" })),
    h("label", {}, "Expires (optional)", h("input", { name: "expires_at", type: "datetime-local" })),
    h("button", { type: "submit" }, "Save"));
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { ws_id: state.ws, value: f.get("value") };
    if (f.get("expires_at")) body.expires_at = new Date(f.get("expires_at")).toISOString();
    try { const r = await api("POST", `/api/secrets/${f.get("name")}`, body); form.reset(); say(`Saved ${r.name} (version ${r.version}).`); load(); }
    catch (err) { say(err.message, true); }
  };
  await load();
  return { el: h("section", { class: "pad" }, h("h1", { text: "Secrets" }),
    h("p", { class: "muted", text: "Jobs, terminals and agent runs get secrets by name (\"secrets\": [\"NAME\"]); their values are replaced by [secret:NAME] in every output." }),
    msg, shown, h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Name", "Version", "Updated", "Expires", "Last used", ""].map((t) => h("th", { text: t })))), rows),
    h("h2", { text: "Set a secret" }), form), title: "Secrets" };
}

export async function policiesView() {
  const msg = h("p", { role: "status" });
  const editor = h("textarea", { rows: 18, spellcheck: "false", class: "code-input", "aria-label": "Policy document (JSON)" });
  const history = h("ul", {});
  let version = 0;
  const load = async () => {
    const doc = await api("GET", `/api/policies?ws_id=${state.ws}`);
    version = doc.version;
    editor.value = JSON.stringify({ rules: doc.rules, defaults: doc.defaults }, null, 2);
    msg.textContent = `Version ${doc.version}${doc.updated_at ? ` · ${when(doc.updated_at)}` : ""}`;
    msg.className = "muted";
    const hs = await api("GET", `/api/policies/history?ws_id=${state.ws}`);
    history.replaceChildren(...hs.items.map((v) => h("li", { text: `version ${v.version} · ${when(v.created_at)} · ${v.created_by || ""}` })));
  };
  const save = h("button", { type: "button" }, "Save");
  save.onclick = async () => {
    let body;
    try { body = JSON.parse(editor.value); } catch (e) { msg.textContent = `Not JSON: ${e.message}`; msg.className = "bad"; return; }
    try {
      const r = await fetch("/api/policies", { method: "PUT", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "If-Match": `"${version}"`, "X-CSRF-Token": await csrfToken() },
        body: JSON.stringify({ ws_id: state.ws, ...body }) });
      const j = await r.json();
      if (!r.ok) throw new APIError(r.status, j);
      await load();
      msg.textContent = `Saved as version ${j.version}.`; msg.className = "ok";
    } catch (e) { msg.textContent = e.status === 412 ? `${e.message} (your text is kept; reload to see theirs)` : e.message; msg.className = "bad"; }
  };
  const evalForm = h("form", { class: "row", "aria-label": "Try the policy" },
    h("input", { name: "action", placeholder: "action, e.g. shell.run", "aria-label": "Action", required: true }),
    h("input", { name: "context", placeholder: '{"command": "rm -rf /"}', "aria-label": "Context (JSON)", class: "grow" }),
    h("button", { type: "submit" }, "Evaluate"));
  const decision = h("p", { role: "status" });
  evalForm.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(evalForm);
    try {
      const d = await api("POST", "/api/policies/evaluate", { ws_id: state.ws, action: f.get("action"), context: f.get("context") ? JSON.parse(f.get("context")) : {} });
      decision.textContent = `${d.effect}${d.rule_id ? ` (rule ${d.rule_id})` : ""}${d.reason ? `: ${d.reason}` : ""}`;
      decision.className = d.effect === "allow" ? "ok" : "bad";
    } catch (err) { decision.textContent = err.message; decision.className = "bad"; }
  };
  await load();
  return { el: h("section", { class: "pad" }, h("h1", { text: "Policy" }), msg, editor, h("div", { class: "row" }, save),
    h("h2", { text: "Try it" }), evalForm, decision, h("h2", { text: "History" }), history), title: "Policy" };
}

async function csrfToken() {
  const r = await fetch("/api/auth/session", { credentials: "same-origin" });
  return (await r.json()).csrf_token;
}
