// The workspace app: one page under /w/ whose view is read from the URL, so every view has a link
// and a reload restores it.
//   /w/<ws>                                  projects of the workspace (open a folder, clone)
//   /w/<ws>/members, /w/<ws>/audit, /w/<ws>/admin   members and roles; the audit trail; instance admin
//   /w/<ws>/secrets, /w/<ws>/policies               the workspace's secrets; its policy
//   /w/<ws>/approvals                               actions held for approval, decided here
//   /w/<ws>/mcp                                     the tool registry: MCP servers, credentials, catalogue
//   /w/<ws>/activity, /w/<ws>/notifications         the workspace's activity (live); your notifications
//   /w/<ws>/reviews, /w/<ws>/review/<id>, /w/<ws>/invite   reviews; one review; invitations
//   /w/<ws>/browser, /w/<ws>/browser-run/<id>       browser checks and the allowlist; one run
//   /w/<ws>/p/<project>                      the project: rescan, findings, run a command or the tests, jobs
//   /w/<ws>/p/<project>/file/<path>#L10-L20  a file, lines 10-20 marked
//   /w/<ws>/p/<project>/search?q=…           search results
//   /w/<ws>/p/<project>/notebooks, …/notebook/<path>  the project's notebooks; one notebook
//   /w/<ws>/p/<project>/terminal/<id>        a terminal;  …/job/<id>  a job's output
//   /w/<ws>/p/<project>/agent, …/run/<id>    agent runs: start one, history; one run streamed
//   /w/<ws>/p/<project>/budget, …/receipts   spend per day and the caps; the receipt chain
import { api, session, APIError } from "./api.js";
import { h, $ } from "./dom.js";
import { fileView, searchView, quickOpen } from "./code.js";
import { terminalView, jobView, projectHome } from "./run.js";
import { agentView, runView, budgetView, receiptsView } from "./agent.js";
import { membersView, auditView, adminView } from "./admin.js";
import { secretsView, policiesView, approvalsView } from "./guard.js";
import { mcpView } from "./mcp.js";
import { notebooksView, notebookView } from "./notebook.js";
import { browserView, browserRunView } from "./browser.js";
import { activityView, notificationsView, reviewsView, reviewView, inviteView, startBell } from "./collab.js";

export const state = { ws: null, project: null, projects: [], user: null, tabs: [], views: new Map() };

export function go(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  route();
}

export function say(text, bad = false) {
  const el = $("#st-msg");
  el.textContent = text;
  el.className = "grow" + (bad ? " bad" : "");
}

export function base() { return `/w/${state.ws}/p/${state.project.id}`; }

function parse() {
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  // parts[0] === "w"
  if (parts[2] && parts[2] !== "p") return { ws: parts[1], project: null, kind: parts[2], rest: parts.slice(3).join("/") };
  return { ws: parts[1], project: parts[2] === "p" ? parts[3] : null, kind: parts[4] || null, rest: parts.slice(5).join("/") };
}

async function boot() {
  const s = await session();
  if (!s || s.mfa_required) {
    location.href = "/login.html?next=" + encodeURIComponent(location.pathname + location.search + location.hash);
    return;
  }
  state.user = s.user;
  $("#admin-link").hidden = !s.is_admin && !s.user?.is_admin;
  $("#btn-quick").onclick = () => state.project && quickOpen();
  $("#btn-search").onclick = () => state.project && go(`${base()}/search`);
  $("#btn-terminal").onclick = () => state.project && newTerminal();
  $("#btn-agent").onclick = () => state.project && go(`${base()}/agent`);
  $("#show-ignored").onchange = () => loadTree();
  $("#ws-select").onchange = (e) => go(`/w/${e.target.value}`);
  for (const [id, kind] of [["members-link", "members"], ["audit-link", "audit"], ["admin-link", "admin"], ["secrets-link", "secrets"], ["policies-link", "policies"], ["approvals-link", "approvals"], ["mcp-link", "mcp"], ["activity-link", "activity"], ["reviews-link", "reviews"], ["invite-link", "invite"], ["browser-link", "browser"]]) {
    $("#" + id).onclick = (e) => { e.preventDefault(); go(`/w/${state.ws}/${kind}`); };
  }
  $("#project-select").onchange = (e) => go(e.target.value ? `/w/${state.ws}/p/${e.target.value}` : `/w/${state.ws}`);
  document.addEventListener("keydown", (e) => {
    const mod = e.ctrlKey || e.metaKey;
    if (mod && !e.shiftKey && e.key.toLowerCase() === "p" && state.project) { e.preventDefault(); quickOpen(); }
    if (mod && e.shiftKey && e.key.toLowerCase() === "f" && state.project) { e.preventDefault(); go(`${base()}/search`); }
  });
  window.addEventListener("popstate", route);
  window.addEventListener("hashchange", () => { const v = state.views.get(viewKey()); if (v?.onHash) v.onHash(); });
  setInterval(statusBar, 10000);
  startBell().catch(() => {});
  await route();
}

async function newTerminal() {
  try {
    const t = await api("POST", "/api/pty/spawn", { project_id: state.project.id, cols: 100, rows: 30 });
    if (t.approval_id) return say(`Held for approval (rule ${t.rule_id || "default"}); the terminal opens once an approver allows it.`);
    go(`${base()}/terminal/${t.id}`);
  } catch (e) { say(e.message, true); }
}

function viewKey() {
  const r = parse();
  if (!r.project) return `ws:${r.ws}:${r.kind || ""}:${r.rest}`;
  if (!r.kind) return `home:${r.project}`;
  if (["search", "agent", "budget", "receipts"].includes(r.kind)) return `${r.kind}:${r.project}`;
  return `${r.kind}:${r.project}:${r.rest}`;
}

let routing = Promise.resolve();
async function route() { routing = routing.then(routeNow, routeNow); return routing; }

async function routeNow() {
  const r = parse();
  if (!r.ws) {
    const list = await api("GET", "/api/workspaces");
    if (!list.items.length) { say("You are in no workspace yet.", true); return; }
    return go(`/w/${list.items[0].id}`, { replace: true });
  }
  if (r.ws !== state.ws) await enterWorkspace(r.ws);
  if (r.project !== (state.project?.id ?? null)) await enterProject(r.project);
  const key = viewKey();
  let view = state.views.get(key);
  if (!view) {
    try { view = await makeView(r); } catch (e) { view = { el: h("div", { class: "pad" }, h("p", { class: "bad", text: e.message })), title: "Error" }; }
    state.views.set(key, view);
    $("#views").append(view.el);
    if (view.closable !== false && r.project) addTab(key, view.title, location.pathname + location.search);
  }
  for (const [k, v] of state.views) v.el.hidden = k !== key;
  if (view.onShow) view.onShow();
  renderTabs(key);
  document.title = `${view.title} · Kiln`;
}

async function makeView(r) {
  if (!r.project && r.kind === "members") return { ...(await membersView()), closable: false };
  if (!r.project && r.kind === "audit") return { ...(await auditView()), closable: false };
  if (!r.project && r.kind === "admin") return { ...(await adminView()), closable: false };
  if (!r.project && r.kind === "secrets") return { ...(await secretsView()), closable: false };
  if (!r.project && r.kind === "policies") return { ...(await policiesView()), closable: false };
  if (!r.project && r.kind === "approvals") return { ...(await approvalsView()), closable: false };
  if (!r.project && r.kind === "mcp") return { ...(await mcpView()), closable: false };
  if (!r.project && r.kind === "activity") return { ...(await activityView()), closable: false };
  if (!r.project && r.kind === "notifications") return { ...(await notificationsView()), closable: false };
  if (!r.project && r.kind === "reviews") return { ...(await reviewsView()), closable: false };
  if (!r.project && r.kind === "review") return { ...(await reviewView(r.rest)), closable: false };
  if (!r.project && r.kind === "invite") return { ...(await inviteView()), closable: false };
  if (!r.project && r.kind === "browser") return { ...(await browserView()), closable: false };
  if (!r.project && r.kind === "browser-run") return { ...(await browserRunView(r.rest)), closable: false };
  if (!r.project) return projectsView();
  if (!r.kind) return { ...(await projectHome()), closable: false };
  if (r.kind === "file") return fileView(r.rest);
  if (r.kind === "notebooks") return notebooksView();
  if (r.kind === "notebook") return notebookView(r.rest);
  if (r.kind === "search") return searchView();
  if (r.kind === "terminal") return terminalView(r.rest);
  if (r.kind === "job") return jobView(r.rest);
  if (r.kind === "agent") return agentView();
  if (r.kind === "run") return runView(r.rest);
  if (r.kind === "budget") return budgetView();
  if (r.kind === "receipts") return receiptsView();
  throw new Error("Unknown view " + r.kind);
}

async function enterWorkspace(ws) {
  state.ws = ws;
  const list = await api("GET", "/api/workspaces");
  const sel = $("#ws-select");
  sel.replaceChildren(...list.items.map((w) => h("option", { value: w.id, selected: w.id === ws, text: w.name })));
  await loadProjects();
}

export async function loadProjects() {
  state.projects = (await api("GET", `/api/project/list?ws_id=${state.ws}`)).items;
  const sel = $("#project-select");
  sel.replaceChildren(h("option", { value: "", text: "All projects" }),
    ...state.projects.map((p) => h("option", { value: p.id, text: p.name })));
  sel.value = state.project?.id ?? "";
}

async function enterProject(id) {
  for (const v of state.views.values()) { v.el.remove(); if (v.close) v.close(); }
  state.views.clear();
  state.project = id ? state.projects.find((p) => p.id === id) || null : null;
  if (id && !state.project) {
    await loadProjects();
    state.project = state.projects.find((p) => p.id === id) || null;
    if (!state.project) throw new APIError(404, { error: { message: "No such project in this workspace" } });
  }
  $("#project-select").value = id ?? "";
  state.tabs = id ? JSON.parse(sessionStorage.getItem(`kiln.tabs.${id}`) || "[]") : [];
  $("#side").hidden = !id;
  $("#project-actions").hidden = !id;
  if (id) { await loadTree(); statusBar(); }
}

// --- tabs: every open view, kept while the project is open (and across reloads of this tab) ---
function addTab(key, title, url) {
  if (!state.tabs.some((t) => t.key === key)) state.tabs.push({ key, title, url });
  saveTabs();
}
function saveTabs() { if (state.project) sessionStorage.setItem(`kiln.tabs.${state.project.id}`, JSON.stringify(state.tabs)); }
function renderTabs(active) {
  const bar = $("#tabs");
  const home = h("button", { type: "button", role: "tab", class: "tab", "aria-selected": String(active.startsWith("home:")), onclick: () => go(base()) }, state.project ? state.project.name : "Projects");
  bar.replaceChildren(...(state.project ? [home] : []), ...state.tabs.map((t) => {
    const close = h("button", { type: "button", class: "tab-close", "aria-label": `Close ${t.title}`, text: "×", onclick: (e) => { e.stopPropagation(); closeTab(t.key); } });
    return h("span", { class: "tab-wrap" },
      h("button", { type: "button", role: "tab", class: "tab", "aria-selected": String(t.key === active), title: t.title, onclick: () => go(t.url) }, t.title), close);
  }));
}
function closeTab(key) {
  state.tabs = state.tabs.filter((t) => t.key !== key);
  saveTabs();
  const v = state.views.get(key);
  if (v) { v.el.remove(); if (v.close) v.close(); state.views.delete(key); }
  if (viewKey() === key) go(state.tabs.length ? state.tabs[state.tabs.length - 1].url : base());
  else renderTabs(viewKey());
}
export function retitle(key, title) {
  const t = state.tabs.find((x) => x.key === key);
  if (t) { t.title = title; saveTabs(); renderTabs(viewKey()); }
}
export function currentKey() { return viewKey(); }

// --- the file tree: one level at a time ---
export async function loadTree() {
  const root = $("#tree");
  root.replaceChildren();
  if (state.project) await expand(root, "");
}
async function expand(ul, path) {
  const all = $("#show-ignored").checked ? "&all=1" : "";
  let items;
  try { items = (await api("GET", `/api/project/tree?project_id=${state.project.id}&path=${encodeURIComponent(path)}${all}`)).items; }
  catch (e) { ul.append(h("li", { class: "bad", text: e.message })); return; }
  for (const it of items) {
    const p = path ? `${path}/${it.name}` : it.name;
    if (it.type === "dir") {
      const sub = h("ul", { hidden: true });
      const btn = h("button", { type: "button", class: "tree-dir", "aria-expanded": "false", "data-path": p }, it.name);
      btn.onclick = async () => {
        const open = btn.getAttribute("aria-expanded") === "true";
        btn.setAttribute("aria-expanded", String(!open));
        sub.hidden = open;
        if (!open && !sub.childElementCount) await expand(sub, p);
      };
      ul.append(h("li", {}, btn, sub));
    } else {
      const a = h("a", { href: `${base()}/file/${p.split("/").map(encodeURIComponent).join("/")}`, class: "tree-file" + (it.git_status ? " git-" + it.git_status.replace("?", "u") : ""), "data-path": p }, it.name);
      a.onclick = (e) => { e.preventDefault(); go(a.getAttribute("href")); };
      ul.append(h("li", {}, a));
    }
  }
  if (ul.id === "tree") { ul.dataset.loaded = "1"; performance.mark("kiln:tree-rendered"); }
}

// --- status bar: index state, running jobs, spend today ---
async function statusBar() {
  if (!state.project) return;
  const id = state.project.id;
  try {
    const jobs = await api("GET", `/api/shell/jobs?project_id=${id}&status=running`);
    $("#st-jobs").textContent = `${jobs.items.length} running job${jobs.items.length === 1 ? "" : "s"}`;
  } catch { $("#st-jobs").textContent = ""; }
  $("#st-index").textContent = `index: ${state.project.index_status}`;
  try {
    const today = new Date().toISOString().slice(0, 10);
    const l = await api("GET", `/api/budget/ledger?ws_id=${state.ws}&since=${today}`);
    const c = l.totals?.cost_usd_micros || 0;
    $("#st-budget").textContent = `today $${(c / 1e6).toFixed(c && c < 10000 ? 4 : 2)}`;
  } catch { $("#st-budget").textContent = ""; }
}

function projectsView() {
  const list = h("ul", { class: "cards" });
  const render = () => list.replaceChildren(...state.projects.map((p) =>
    h("li", {}, h("a", { href: `/w/${state.ws}/p/${p.id}`, onclick: (e) => { e.preventDefault(); go(`/w/${state.ws}/p/${p.id}`); } }, p.name),
      h("div", { class: "muted", text: `${p.path} · ${p.vcs}${p.branch ? " " + p.branch : ""} · ${p.index_status}` }))));
  render();
  const msg = h("p", { role: "status" });
  const form = h("form", { class: "stack", "aria-label": "Open a project" },
    h("label", {}, "A folder under a project root, or a git URL", h("input", { name: "where", required: true, placeholder: "/srv/code/app or https://example.com/app.git" })),
    h("button", { type: "submit" }, "Open"), msg);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const where = new FormData(form).get("where").trim();
    const body = /^(https?|ssh|file):\/\//.test(where) || where.includes("@") ? { ws_id: state.ws, git_url: where } : { ws_id: state.ws, path: where };
    msg.textContent = body.git_url ? "Cloning…" : "Opening…";
    try {
      const p = await api("POST", "/api/project/load", body);
      await loadProjects();
      go(`/w/${state.ws}/p/${p.id}`);
    } catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  return { el: h("section", { class: "pad" }, h("h1", { text: "Projects" }), list, h("h2", { text: "Open a project" }), form), title: "Projects", closable: false };
}

boot().catch((e) => say(e.message, true));
