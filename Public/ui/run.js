// Running things: the project's home (rescan, findings, commands, tests, jobs), jobs' live output,
// and terminals (xterm.js over the PTY WebSocket).
import { api, stream } from "./api.js";
import { h, ansi } from "./dom.js";
import { state, go, base, say, retitle, loadTree } from "./main.js";
import { vendorFile } from "./code.js";

export async function projectHome() {
  const p = state.project;
  const progress = h("p", { class: "muted", role: "status" });
  const rescan = h("button", { type: "button" }, "Rescan");
  rescan.onclick = async () => {
    rescan.disabled = true;
    try {
      const job = await api("POST", "/api/project/rescan", { project_id: p.id });
      const es = stream(job.events_url || `/api/project/rescan/${job.job_id}/events`, {
        progress: (d) => { progress.textContent = `indexed ${d.indexed ?? 0} of ${d.files_seen ?? 0} files seen…`; },
        done: (d) => { progress.textContent = `done: ${d.indexed ?? 0} indexed, ${d.unchanged ?? 0} unchanged, ${d.symbols ?? 0} symbols, ${d.findings ?? 0} findings`; es.close(); rescan.disabled = false; findings(); loadTree(); },
        failed: (d) => { progress.textContent = d.error || "rescan failed"; es.close(); rescan.disabled = false; },
      });
      es.onerror = () => { rescan.disabled = false; };
    } catch (e) { progress.textContent = e.message; rescan.disabled = false; }
  };
  const findingsList = h("ul", { class: "findings" });
  async function findings() {
    try {
      const r = await api("GET", `/api/project/findings?project_id=${p.id}`);
      findingsList.replaceChildren(...r.items.slice(0, 200).map((f) => {
        const href = `${base()}/file/${f.path.split("/").map(encodeURIComponent).join("/")}#L${f.line || 1}`;
        return h("li", {}, h("span", { class: "pill", text: f.kind }), " ",
          h("a", { href, onclick: (e) => { e.preventDefault(); go(href); }, text: `${f.path}:${f.line ?? ""}` }), " ", h("span", { class: "muted", text: f.detail || f.text || "" }));
      }));
      if (!r.items.length) findingsList.append(h("li", { class: "muted", text: "Nothing found." }));
    } catch (e) { findingsList.replaceChildren(h("li", { class: "bad", text: e.message })); }
  }
  const cmd = h("form", { class: "row", "aria-label": "Run a command" },
    h("input", { name: "command", placeholder: "a shell command, e.g. make build", "aria-label": "Command", required: true, class: "grow" }),
    h("button", { type: "submit" }, "Run"),
    h("button", { type: "button", id: "run-tests", onclick: () => start("/api/shell/test", { project_id: p.id }) }, "Run tests"));
  cmd.onsubmit = (e) => { e.preventDefault(); start("/api/shell/run", { project_id: p.id, command: new FormData(cmd).get("command") }); };
  async function start(path, body) {
    try {
      const r = await api("POST", path, body, { accept: "application/json" });
      if (r.approval_id) return say(`Held for approval (rule ${r.rule_id || "default"}); it runs once an approver allows it on the Approvals page.`);
      go(`${base()}/job/${r.job_id}`);
    } catch (e) { say(e.message, true); }
  }
  const jobs = h("ul", { class: "jobs" });
  async function history() {
    try {
      const r = await api("GET", `/api/shell/jobs?project_id=${p.id}&limit=20`);
      jobs.replaceChildren(...r.items.map((j) => h("li", {},
        h("a", { href: `${base()}/job/${j.id}`, onclick: (e) => { e.preventDefault(); go(`${base()}/job/${j.id}`); }, text: j.command }),
        " ", h("span", { class: `pill ${j.status === "succeeded" ? "ok" : j.status === "running" ? "" : "bad"}`, text: j.status }))));
    } catch (e) { jobs.replaceChildren(h("li", { class: "bad", text: e.message })); }
  }
  findings(); history();
  const el = h("section", { class: "pad" },
    h("h1", { text: p.name }),
    h("p", { class: "muted", text: `${p.path} · ${p.vcs}${p.branch ? " · " + p.branch : ""}${p.head_commit ? " @ " + p.head_commit.slice(0, 10) : ""}` }),
    h("nav", { class: "row", "aria-label": "Project pages" }, ...[["agent", "Agent runs"], ["notebooks", "Notebooks"], ["budget", "Budget"], ["receipts", "Receipts"], ["search", "Search"]]
      .map(([k, t]) => h("a", { href: `${base()}/${k}`, onclick: (e) => { e.preventDefault(); go(`${base()}/${k}`); }, text: t }))),
    h("div", { class: "row" }, rescan, progress),
    h("h2", { text: "Run" }), cmd,
    h("h2", { text: "Recent jobs" }), jobs,
    h("h2", { text: "Findings" }), findingsList);
  return { el, title: p.name, onShow: history };
}

export async function jobView(id) {
  const out = h("pre", { class: "job-out", "aria-label": "Job output", tabindex: "0" });
  const head = h("div", { class: "row" });
  const result = h("p", { role: "status", class: "job-result" });
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const job = await api("GET", `/api/shell/jobs/${id}`);
  head.append(h("code", { class: "grow", text: job.command }), cancel);
  cancel.onclick = async () => { try { await api("POST", `/api/shell/cancel/${id}`); } catch (e) { say(e.message, true); } };
  const colour = { stdout: { fg: null, bold: false }, stderr: { fg: null, bold: false } };
  let es = null;
  const view = { el: h("section", { class: "pad job-view" }, head, out, result), title: job.command.slice(0, 30), close: () => es?.close() };
  // The job's whole stream from its first event: a reload or a later visit sees everything.
  es = stream(`/api/shell/jobs/${id}/events`, {
    stdout: (d) => { ansi(d.data, out, colour.stdout); out.scrollTop = out.scrollHeight; },
    stderr: (d) => { const span = h("span", { class: "stderr" }); ansi(d.data, span, colour.stderr); out.append(span); out.scrollTop = out.scrollHeight; },
    exit: (d) => {
      es.close();
      cancel.hidden = true;
      const s = d.summary;
      result.textContent = `${d.status} · exit ${d.code ?? d.signal_name} · ${d.duration_ms} ms` +
        (s ? ` · ${s.runner}: ${s.passed} passed, ${s.failed} failed${s.skipped ? `, ${s.skipped} skipped` : ""}` : "");
      result.className = "job-result " + (d.status === "succeeded" ? "ok" : "bad");
      retitle(`job:${state.project.id}:${id}`, `${d.status === "succeeded" ? "✓" : "✗"} ${job.command.slice(0, 28)}`);
    },
  });
  return view;
}

let xtermModule = null;
async function xterm() {
  if (!xtermModule) {
    document.head.append(h("link", { rel: "stylesheet", href: await vendorFile("xterm.css") }));
    xtermModule = await import(await vendorFile("xterm.js"));
  }
  return xtermModule.Terminal;
}

// Terminals by id, for tests and the curious: kilnTerminalText(id) reads the screen buffer.
window.kilnTerminals = window.kilnTerminals || {};
window.kilnTerminalText = (id) => {
  const t = window.kilnTerminals[id];
  if (!t) return null;
  const buf = t._core.buffer, lines = [];
  for (let i = 0; i < buf.lines.length; i++) lines.push(buf.translateBufferLineToString(i, true));
  return lines.join("\n");
};

export async function terminalView(id) {
  const Terminal = await xterm();
  const box = h("div", { class: "term-box", "aria-label": "Terminal" });
  const status = h("p", { class: "muted term-status", role: "status" });
  const el = h("section", { class: "term-view" }, box, status);
  const term = new Terminal({ fontSize: 13, fontFamily: "ui-monospace, monospace", cursorBlink: true, scrollback: 5000 });
  window.kilnTerminals[id] = term;
  let ws = null, opened = false, closed = false;
  const decoder = new TextDecoder();
  const send = (obj) => { if (ws && ws.readyState === 1) ws.send(typeof obj === "string" ? obj : JSON.stringify(obj)); };
  function connect() {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/pty/${id}/stream`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { status.textContent = ""; send({ type: "resize", cols: term.cols, rows: term.rows }); };
    ws.onmessage = (m) => {
      if (typeof m.data !== "string") { term.write(decoder.decode(new Uint8Array(m.data), { stream: true })); return; }
      const c = JSON.parse(m.data);
      if (c.type === "exit") { closed = true; status.textContent = `The shell ended with exit code ${c.code ?? "?"}.`; retitle(`terminal:${state.project.id}:${id}`, `Terminal (exit ${c.code})`); }
    };
    ws.onclose = (e) => { if (!closed) status.textContent = e.code === 1000 ? "Disconnected." : `Disconnected (${e.code}); reopen the tab to reattach.`; };
  }
  term.on("data", (d) => { if (ws && ws.readyState === 1) ws.send(new TextEncoder().encode(d)); });
  term.on("resize", ({ cols, rows }) => send({ type: "resize", cols, rows }));
  const fit = () => { if (opened && !el.hidden && box.clientWidth) term.fit(); };
  new ResizeObserver(fit).observe(box);
  const view = {
    el, title: "Terminal",
    onShow: () => {
      if (!opened) { term.open(box); opened = true; connect(); }
      requestAnimationFrame(() => { fit(); term.focus(); });
    },
    close: () => { closed = true; ws?.close(); term.dispose(); delete window.kilnTerminals[id]; },
  };
  return view;
}
