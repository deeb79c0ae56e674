// Agent runs (start with a cost estimate, stream, diffs, cancel, rollback, receipt), the budget
// (per-day spend as an inline SVG chart, the caps) and the receipt chain.
import { api, stream, APIError } from "./api.js";
import { shareButton } from "./collab.js";
import { h } from "./dom.js";
import { markdown } from "./markdown.js";
import { state, go, base, say, retitle } from "./main.js";

const usd = (micros) => `$${((micros || 0) / 1e6).toFixed(micros && micros < 10000 ? 4 : 2)}`;
const link = (href, text) => h("a", { href, text, onclick: (e) => { e.preventDefault(); go(href); } });

export async function agentView() {
  const p = state.project;
  const prefs = await api("GET", `/api/agent/prefs?ws_id=${state.ws}`).catch(() => ({ effective: {} }));
  const estimate = h("p", { class: "muted", role: "status" });
  const form = h("form", { class: "stack", "aria-label": "Start an agent run" },
    h("label", {}, "What should the agent do?", h("textarea", { name: "prompt", rows: 4, required: true })),
    h("div", { class: "row" },
      h("label", { class: "row" }, "Model", h("input", { name: "model", value: prefs.effective?.model || "", "aria-label": "Model" })),
      h("label", { class: "row" }, "Max steps", h("input", { name: "max_steps", type: "number", min: 1, max: 100, value: prefs.effective?.max_steps || 20, "aria-label": "Max steps" })),
      h("button", { type: "submit" }, "Start run")),
    estimate);
  if (prefs.effective && prefs.effective.configured === false) estimate.textContent = "No model provider is configured on this server (--llm-base-url).";
  let timer = null, seq = 0;
  const estimateNow = async () => {
    const f = new FormData(form), mine = ++seq;
    if (!f.get("prompt").trim() || !f.get("model")) { estimate.textContent = ""; return; }
    try {
      const e = await api("POST", "/api/budget/estimate", { ws_id: state.ws, project_id: p.id, model: f.get("model"), prompt: f.get("prompt"), max_steps: +f.get("max_steps") || undefined });
      if (mine !== seq) return;
      const c = e.cost_usd_micros || {};
      estimate.textContent = `Estimated cost ${usd(c.expected)} (between ${usd(c.low)} and ${usd(c.high)})`;
      estimate.dataset.expected = c.expected ?? "";
    } catch (err) { if (mine === seq) estimate.textContent = err.message; }
  };
  form.oninput = () => { clearTimeout(timer); timer = setTimeout(estimateNow, 300); };
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      const r = await api("POST", "/api/agent/run", { project_id: p.id, prompt: f.get("prompt"), model: f.get("model") || undefined, max_steps: +f.get("max_steps") || undefined }, { accept: "application/json" });
      go(`${base()}/run/${r.run_id}`);
    } catch (err) { estimate.textContent = err.message; estimate.className = "bad"; }
  };
  const history = h("table", { class: "table" });
  const loadHistory = async () => {
    const r = await api("GET", `/api/agent/history?ws_id=${state.ws}&project_id=${p.id}&limit=25`);
    history.replaceChildren(h("tr", {}, ...["Run", "Status", "Model", "Tokens", "Files", "Cost", "Started"].map((t) => h("th", { text: t }))),
      ...r.items.map((run) => {
        const cost = h("td", { text: "…" });
        api("GET", `/api/receipts/${run.id}`).then((rc) => { cost.textContent = usd(rc.cost_usd_micros); }).catch(() => { cost.textContent = run.status === "running" ? "—" : "?"; });
        return h("tr", {}, h("td", {}, link(`${base()}/run/${run.id}`, run.prompt.slice(0, 60) || run.id)),
          h("td", {}, h("span", { class: `pill ${run.status === "completed" ? "ok" : run.status === "running" ? "" : "bad"}`, text: run.rolled_back_at ? "rolled back" : run.status })),
          h("td", { text: run.model }), h("td", { text: `${run.input_tokens} / ${run.output_tokens}` }), h("td", { text: String(run.files_changed) }),
          cost, h("td", { text: new Date(run.started_at).toLocaleString() }));
      }));
  };
  loadHistory().catch((e) => history.replaceChildren(h("tr", {}, h("td", { class: "bad", text: e.message }))));
  return { el: h("section", { class: "pad" }, h("h1", { text: "Agent runs" }), form, h("h2", { text: "History" }), history), title: "Agent", onShow: () => loadHistory().catch(() => {}) };
}

function diffView(diff) {
  const pre = h("pre", { class: "diff" });
  for (const line of String(diff).split("\n")) {
    const cls = line.startsWith("+++") || line.startsWith("---") ? "d-file" : line.startsWith("@@") ? "d-hunk" : line.startsWith("+") ? "d-add" : line.startsWith("-") ? "d-del" : "";
    pre.append(h("span", { class: cls, text: line + "\n" }));
  }
  return pre;
}

export async function runView(id) {
  const log = h("div", { class: "run-log", "aria-live": "polite" });
  const status = h("p", { role: "status", class: "run-status" });
  const actions = h("div", { class: "row" });
  const receipt = h("div", { class: "receipt" });
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const rollback = h("button", { type: "button", hidden: true }, "Roll back");
  actions.append(cancel, rollback, shareButton({ type: "run", id }));
  let current = null, es = null, files = 0;
  const view = { el: h("section", { class: "pad run-view" }, h("h1", { text: "Agent run" }), status, actions, log, receipt), title: "Run", close: () => es?.close() };

  cancel.onclick = async () => { try { await api("POST", `/api/agent/cancel/${id}`); } catch (e) { say(e.message, true); } };
  rollback.onclick = async () => doRollback(false);
  async function doRollback(force) {
    try {
      const r = await api("POST", "/api/agent/rollback", { run_id: id, force });
      status.textContent = `Rolled back: ${(r.restored || []).join(", ") || "nothing to restore"}`;
      status.className = "run-status ok";
      rollback.hidden = true;
    } catch (e) {
      if (e instanceof APIError && e.status === 409 && e.details?.paths) {
        status.replaceChildren(`Changed since the run: ${e.details.paths.join(", ")}. `,
          h("button", { type: "button", class: "secondary", onclick: () => doRollback(true) }, "Roll back anyway"));
        status.className = "run-status bad";
      } else { status.textContent = e.message; status.className = "run-status bad"; }
    }
  }
  async function showReceipt() {
    try {
      const r = await api("GET", `/api/receipts/${id}`);
      const result = h("span", { role: "status", class: "verify-result" });
      const verify = h("button", { type: "button", class: "secondary" }, "Verify");
      verify.onclick = async () => {
        const v = await api("POST", `/api/receipts/${id}/verify`);
        result.textContent = v.ok ? `ok: ${v.checked} receipts checked, every hash, link and signature holds` : `broken at seq ${v.first_break?.seq}: ${v.first_break?.reason}`;
        result.className = "verify-result " + (v.ok ? "ok" : "bad");
      };
      receipt.replaceChildren(h("h2", { text: "Receipt" }),
        h("p", {}, `#${r.seq} · ${usd(r.cost_usd_micros)} · ${r.usage?.input_tokens ?? 0} in / ${r.usage?.output_tokens ?? 0} out · `, h("code", { text: r.hash.slice(0, 16) + "…" }), " ", verify, " ", result));
    } catch (e) { receipt.replaceChildren(h("p", { class: "muted", text: `No receipt yet (${e.message})` })); }
  }
  const ended = (text, ok) => {
    es?.close();
    cancel.hidden = true;
    status.textContent = text; status.className = "run-status " + (ok ? "ok" : "bad");
    rollback.hidden = files === 0;
    retitle(`run:${state.project.id}:${id}`, `${ok ? "✓" : "✗"} Run`);
    setTimeout(showReceipt, 300);
  };
  const toolCalls = new Map();
  es = stream(`/api/agent/follow?run_id=${id}`, {
    "run.started": (d) => { status.textContent = `Running on ${d.model}…`; },
    "message.delta": (d) => {
      if (!current) { current = { text: "", el: h("div", { class: "msg assistant" }) }; log.append(current.el); }
      current.text += d.text;
      current.el.replaceChildren(markdown(current.text));
    },
    message: (d) => {
      const text = d.content || current?.text || "";
      if (!current && text.trim()) { current = { text: "", el: h("div", { class: "msg assistant" }) }; log.append(current.el); }
      if (current) { current.text = text; current.el.replaceChildren(markdown(text)); }
      current = null;
    },
    "tool.call": (d) => {
      const result = h("pre", { class: "tool-out", text: "…" });
      const el = h("details", { class: "tool" }, h("summary", {}, h("code", { text: d.tool }), " ", h("span", { class: "muted", text: JSON.stringify(d.args).slice(0, 120) })), result);
      toolCalls.set(d.call_id, { el, result });
      log.append(el);
    },
    "tool.result": (d) => {
      const t = toolCalls.get(d.call_id);
      if (!t) return;
      t.result.textContent = d.output;
      t.el.classList.add(d.ok ? "ok" : "bad");
    },
    "file.changed": (d) => { files++; log.append(h("div", { class: "file-change" }, h("h3", {}, "Changed ", link(`${base()}/file/${d.path.split("/").map(encodeURIComponent).join("/")}`, d.path)), diffView(d.diff))); },
    "approval.required": (d) => {
      status.replaceChildren(`Waiting for an approval of ${d.tool} (rule ${d.rule_id || "default"})${d.reason ? `: ${d.reason}` : ""} — `,
        link(`/w/${state.ws}/approvals`, "Approvals"));
      status.className = "run-status";
      log.append(h("div", { class: "approval muted", text: `Held for approval (${d.approval_id}) until ${new Date(d.expires_at).toLocaleString()}` }));
    },
    "approval.resolved": (d) => {
      status.textContent = d.decision === "approved" ? "Approved; running…" : `Not approved (${d.decision}); the run goes on without that call`;
      log.append(h("div", { class: `approval ${d.decision === "approved" ? "ok" : "bad"}`, text: `${d.decision}${d.decided_by ? ` by ${d.decided_by}` : ""}${d.reason ? `: ${d.reason}` : ""}` }));
    },
    usage: (d) => { status.dataset.tokens = `${d.input_tokens}/${d.output_tokens}`; },
    "run.completed": (d) => ended("Completed" + (d.summary ? "" : ""), true),
    "run.failed": (d) => ended(`Failed: ${d.error || d.reason || ""}`, false),
    "run.cancelled": () => ended("Cancelled", false),
  });
  return view;
}

export async function budgetView() {
  const since = new Date(Date.now() - 29 * 864e5).toISOString().slice(0, 10);
  const [ledger, limits] = await Promise.all([
    api("GET", `/api/budget/ledger?ws_id=${state.ws}&since=${since}`),
    api("GET", `/api/budget/limits?ws_id=${state.ws}`).catch(() => ({})),
  ]);
  const models = [...new Set(ledger.days.flatMap((d) => d.by_model.map((m) => m.model)))];
  const el = h("section", { class: "pad" }, h("h1", { text: "Budget" }),
    h("p", {}, `Last 30 days: ${usd(ledger.totals.cost_usd_micros)} over ${ledger.totals.runs} runs (${ledger.totals.input_tokens} input, ${ledger.totals.output_tokens} output tokens)`),
    chart(ledger.days, since, models), legend(models), usersTable(ledger), capsForm(limits));
  return { el, title: "Budget" };
}

const PALETTE = ["#d9480f", "#1c7ed6", "#2f9e44", "#ae3ec9", "#e67700", "#1098ad", "#c92a2a", "#5c940d"];
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Per-day spend, stacked by model: an inline SVG, no chart library.
function chart(days, since, models) {
  const byDay = new Map(days.map((d) => [d.day, d]));
  const dates = Array.from({ length: 30 }, (_, i) => new Date(Date.parse(since) + i * 864e5).toISOString().slice(0, 10));
  const max = Math.max(1, ...days.map((d) => d.cost_usd_micros));
  const W = 720, H = 200, pad = 36, bw = (W - pad) / dates.length;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H + 24}`, class: "chart", role: "img", "aria-label": "Spend per day over the last 30 days, by model" });
  root.append(svg("text", { x: 0, y: 12, class: "axis" }, usd(max)), svg("line", { x1: pad, y1: H, x2: W, y2: H, class: "axis-line" }));
  dates.forEach((date, i) => {
    const d = byDay.get(date);
    let y = H;
    for (const m of d?.by_model || []) {
      const hgt = (m.cost_usd_micros / max) * (H - 16);
      if (hgt <= 0) continue;
      y -= hgt;
      const rect = svg("rect", { x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: hgt, fill: PALETTE[models.indexOf(m.model) % PALETTE.length], "data-day": date, "data-model": m.model });
      rect.append(svg("title", {}, `${date} ${m.model}: ${usd(m.cost_usd_micros)} (${m.runs} runs)`));
      root.append(rect);
    }
    if (i % 7 === 0) root.append(svg("text", { x: pad + i * bw, y: H + 16, class: "axis" }, date.slice(5)));
  });
  return root;
}
function legend(models) {
  return h("ul", { class: "legend" }, models.map((m, i) => h("li", {}, h("span", { class: "swatch", style: null, "data-i": i }), m)));
}
function usersTable(ledger) {
  const users = new Map();
  for (const d of ledger.days) for (const u of d.by_user) users.set(u.user_id, (users.get(u.user_id) || 0) + u.cost_usd_micros);
  return h("table", { class: "table" }, h("tr", {}, h("th", { text: "User" }), h("th", { text: "Spend (30 days)" })),
    ...[...users].map(([u, c]) => h("tr", {}, h("td", { text: u }), h("td", { text: usd(c) }))));
}
function capsForm(limits) {
  const msg = h("p", { role: "status" });
  const field = (name, label) => h("label", {}, label, h("input", { name, type: "number", min: 0, step: "0.01", value: limits[name] != null ? (limits[name] / 1e6).toFixed(2) : "", placeholder: "no cap", "aria-label": label }));
  const form = h("form", { class: "stack", "aria-label": "Spending caps" }, h("h2", { text: "Caps (USD)" }),
    field("daily_usd_micros", "Per day"), field("monthly_usd_micros", "Per month"), field("per_run_usd_micros", "Per run"),
    h("button", { type: "submit" }, "Save caps"), msg);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form), body = { ws_id: state.ws };
    for (const k of ["daily_usd_micros", "monthly_usd_micros", "per_run_usd_micros"]) body[k] = f.get(k) === "" ? null : Math.round(+f.get(k) * 1e6);
    try { await api("PUT", "/api/budget/limits", body); msg.textContent = "Saved."; msg.className = "ok"; }
    catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  return form;
}

export async function receiptsView() {
  const r = await api("GET", `/api/receipts?ws_id=${state.ws}&limit=200`);
  const result = h("p", { role: "status" });
  const rows = r.items.slice().reverse();
  const verify = h("button", { type: "button", disabled: !rows.length }, "Verify the chain");
  verify.onclick = async () => {
    const v = await api("POST", `/api/receipts/${rows[0].run_id}/verify`);
    result.textContent = v.ok ? `ok: ${v.checked} receipts, every hash, link and signature holds` : `broken at seq ${v.first_break?.seq}: ${v.first_break?.reason}`;
    result.className = v.ok ? "ok" : "bad";
  };
  const table = h("table", { class: "table" }, h("tr", {}, ...["Seq", "Run", "Status", "Cost", "Hash"].map((t) => h("th", { text: t }))),
    ...rows.map((x) => h("tr", {}, h("td", { text: String(x.seq) }), h("td", {}, link(`${base()}/run/${x.run_id}`, x.run_id)),
      h("td", { text: x.status }), h("td", { text: usd(x.cost_usd_micros) }), h("td", {}, h("code", { text: x.hash.slice(0, 16) + "…" })))));
  return { el: h("section", { class: "pad" }, h("h1", { text: "Receipts" }), h("div", { class: "row" }, verify, rows.length ? shareButton({ type: "receipt_chain", id: rows.reduce((a, b) => (b.seq > a.seq ? b : a)).run_id }, "Share the chain…") : null, result), table), title: "Receipts" };
}
