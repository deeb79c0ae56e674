// Secrets, policies and approvals pages: a workspace's secrets (names only until revealed with
// step-up), its policy document (edited as JSON, saved with If-Match, tried with a dry run), and the
// actions its rules hold for approval (approved with step-up, rejected with a reason, live).
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
      if (r.approval_id) return say(`Revealing ${name} needs an approval (rule ${r.rule_id || "default"}); once approved, collect it from the Approvals page.`);
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

export async function approvalsView() {
  const rows = h("tbody"), msg = h("p", { role: "status" }), shown = h("p", { class: "once" });
  const filter = h("select", { "aria-label": "Show" }, ...[["pending", "Pending"], ["", "All"]].map(([v, t]) => h("option", { value: v }, t)));
  const say = (text, bad) => { msg.textContent = text; msg.className = bad ? "bad" : "ok"; };
  const describe = (a) => Object.entries(a.context || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`).join(" · ");
  const load = async () => {
    const r = await api("GET", `/api/approvals?ws_id=${state.ws}${filter.value ? `&state=${filter.value}` : ""}`);
    rows.replaceChildren(...r.items.map((a) => h("tr", {},
      h("td", {}, h("code", { text: a.action }), h("div", { class: "muted", text: describe(a) })),
      h("td", { text: a.rule_id || "default" }), h("td", { text: a.requested_by }),
      h("td", { text: a.run_id || (a.job_id ? `job ${a.job_id}` : a.pty_id ? `terminal ${a.pty_id}` : "request") }),
      h("td", {}, h("span", { class: `pill ${a.state === "approved" ? "ok" : a.state === "pending" ? "" : "bad"}`, text: a.expired ? "expired" : a.state })),
      h("td", { text: a.state === "pending" ? `until ${when(a.expires_at)}` : `${a.decided_by || ""} ${when(a.decided_at)}${a.decision_reason ? ` · ${a.decision_reason}` : ""}` }),
      h("td", { class: "row" }, ...actions(a)))));
    if (!r.items.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted", text: filter.value ? "Nothing waits for a decision." : "No approvals yet." })));
  };
  function actions(a) {
    const out = [];
    if (a.state === "pending" && a.requested_by !== state.user?.id || a.state === "pending" && a.self_approval) {
      out.push(h("button", { type: "button", "aria-label": `Approve ${a.action} (${a.id})`, onclick: () => decide(a, "approve") }, "Approve"));
    }
    if (a.state === "pending") out.push(h("button", { type: "button", class: "secondary", "aria-label": `Reject ${a.action} (${a.id})`, onclick: () => decide(a, "reject") }, "Reject"));
    if (a.state === "approved" && a.action === "secrets.reveal" && a.requested_by === state.user?.id && !a.redeemed_at) {
      out.push(h("button", { type: "button", "aria-label": `Collect ${a.context.secret}`, onclick: () => collect(a) }, "Reveal"));
    }
    return out;
  }
  async function decide(a, verb) {
    const reason = verb === "reject" ? (prompt(`Why reject ${a.action}? (the requester and the run are told)`) ?? null) : undefined;
    if (reason === null) return;
    try { const r = await api("POST", `/api/approvals/${a.id}/${verb}`, reason ? { reason } : {}); say(`${r.state}${r.job_id ? ` · job ${r.job_id} started` : ""}${r.pty_id ? ` · terminal ${r.pty_id} open` : ""}`); load(); }
    catch (e) { say(e.message, true); }
  }
  async function collect(a) {
    try {
      const r = await api("GET", `/api/secrets/${a.context.secret}?ws_id=${state.ws}&approval_id=${a.id}`);
      shown.replaceChildren(`${r.name}: `, h("code", { text: r.value }), " ", h("button", { type: "button", class: "secondary", onclick: () => shown.replaceChildren() }, "Hide"));
      load();
    } catch (e) { say(e.message, true); }
  }
  filter.onchange = load;
  await load();
  // Live: a new or decided approval reloads the list (from now on, not the history).
  let es = null, timer = null;
  try {
    es = new EventSource(`/api/approvals/events?ws_id=${state.ws}`);
    const again = () => { clearTimeout(timer); timer = setTimeout(() => load().catch(() => {}), 200); };
    es.addEventListener("approval.required", again);
    es.addEventListener("approval.resolved", again);
  } catch { es = null; }
  return { el: h("section", { class: "pad" }, h("h1", { text: "Approvals" }),
    h("p", { class: "muted", text: "Actions the workspace's policy holds (require_approval) wait here. Approving needs a fresh second factor, and someone other than the requester unless the rule allows self-approval." }),
    h("div", { class: "row" }, h("label", {}, "Show ", filter)), msg, shown,
    h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Action", "Rule", "Requested by", "For", "State", "When", ""].map((t) => h("th", { text: t })))), rows)),
    title: "Approvals", close: () => { es?.close(); clearTimeout(timer); } };
}

async function csrfToken() {
  const r = await fetch("/api/auth/session", { credentials: "same-origin" });
  return (await r.json()).csrf_token;
}
