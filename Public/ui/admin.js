// Workspace administration (members and roles, the audit trail) and the instance admin pages
// (accounts, who may run commands, admins, invitations). Each control calls one documented route.
import { api } from "./api.js";
import { h } from "./dom.js";
import { state, say } from "./main.js";

const ROLES = ["owner", "admin", "member", "viewer"];
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

export async function membersView() {
  const table = h("table", { class: "table", "aria-label": "Members" });
  const msg = h("p", { role: "status" });
  const load = async () => {
    const r = await api("GET", `/api/workspaces/${state.ws}/members`);
    table.replaceChildren(h("tr", {}, ...["Name", "Email", "Role", "Joined", ""].map((t) => h("th", { text: t }))),
      ...r.items.map((m) => {
        const role = h("select", { "aria-label": `Role of ${m.email || m.user_id}` }, ROLES.map((x) => h("option", { value: x, selected: x === m.role, text: x })));
        role.onchange = async () => {
          try { await api("PATCH", `/api/workspaces/${state.ws}/members/${m.user_id}`, { role: role.value }); msg.textContent = "Role changed."; msg.className = "ok"; }
          catch (e) { msg.textContent = e.message; msg.className = "bad"; role.value = m.role; }
        };
        const self = m.user_id === state.user.id;
        const remove = h("button", { type: "button", class: "secondary", "aria-label": `${self ? "Leave" : "Remove"} ${m.email || m.user_id}` }, self ? "Leave" : "Remove");
        remove.onclick = async () => {
          try { await api("DELETE", `/api/workspaces/${state.ws}/members/${m.user_id}`); if (self) location.href = "/w/"; else load(); }
          catch (e) { msg.textContent = e.message; msg.className = "bad"; }
        };
        return h("tr", {}, h("td", { text: m.name || "" }), h("td", { text: m.email || m.user_id }), h("td", {}, role), h("td", { text: when(m.joined_at) }), h("td", {}, remove));
      }));
  };
  const add = h("form", { class: "row", "aria-label": "Add a member" },
    h("input", { name: "email", type: "email", placeholder: "their email", "aria-label": "Email", required: true }),
    h("select", { name: "role", "aria-label": "Role" }, ROLES.map((x) => h("option", { value: x, selected: x === "member", text: x }))),
    h("button", { type: "submit" }, "Add"));
  add.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(add);
    try { await api("POST", `/api/workspaces/${state.ws}/members`, { email: f.get("email"), role: f.get("role") }); add.reset(); msg.textContent = "Added."; msg.className = "ok"; load(); }
    catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  await load();
  return { el: h("section", { class: "pad" }, h("h1", { text: "Members" }), table, h("h2", { text: "Add someone with an account" }), add, msg), title: "Members" };
}

export async function auditView() {
  const rows = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  const filters = h("form", { class: "row", "aria-label": "Filter the audit trail" },
    ...[["actor", "actor (user id)"], ["action", "action, e.g. project.load"], ["resource", "resource id"]].map(([n, p]) => h("input", { name: n, placeholder: p, "aria-label": n })),
    h("label", { class: "row" }, "since", h("input", { name: "since", type: "date", "aria-label": "since" })),
    h("label", { class: "row" }, "until", h("input", { name: "until", type: "date", "aria-label": "until" })),
    h("button", { type: "submit" }, "Filter"));
  let cursor = null;
  const load = async (append) => {
    const f = new FormData(filters), q = new URLSearchParams({ ws_id: state.ws, limit: "50" });
    for (const k of ["actor", "action", "resource", "since", "until"]) if (f.get(k)) q.set(k, k === "since" || k === "until" ? new Date(f.get(k)).toISOString() : f.get(k));
    if (append && cursor) q.set("cursor", cursor);
    const r = await api("GET", `/api/audit?${q}`);
    if (!append) rows.replaceChildren();
    for (const e of r.items) rows.append(h("tr", {}, h("td", { text: when(e.at) }), h("td", {}, h("code", { text: e.action })), h("td", { text: e.actor_user_id || e.actor_key_id || "" }),
      h("td", { text: [e.resource_type, e.resource_id].filter(Boolean).join(" ") }), h("td", { text: e.ip || "" })));
    cursor = r.next_cursor; more.hidden = !cursor;
  };
  filters.onsubmit = (e) => { e.preventDefault(); load(false).catch((err) => say(err.message, true)); };
  more.onclick = () => load(true);
  await load(false);
  return { el: h("section", { class: "pad" }, h("h1", { text: "Audit trail" }), filters,
    h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["When", "Action", "Who", "Resource", "From"].map((t) => h("th", { text: t })))), rows), more), title: "Audit" };
}

export async function adminView() {
  const users = h("tbody"), msg = h("p", { role: "status" }), invites = h("tbody"), link = h("p", { class: "once" });
  const search = h("input", { type: "search", placeholder: "filter by email or name", "aria-label": "Filter accounts" });
  const act = async (u, what) => {
    try { await api("POST", `/api/admin/users/${u.id}/${what}`); msg.textContent = `${what}: ${u.email}`; msg.className = "ok"; loadUsers(); }
    catch (e) { msg.textContent = e.message; msg.className = "bad"; }
  };
  const loadUsers = async () => {
    const r = await api("GET", `/api/admin/users?limit=200${search.value ? "&q=" + encodeURIComponent(search.value) : ""}`);
    users.replaceChildren(...r.items.map((u) => h("tr", {}, h("td", { text: u.email }), h("td", { text: u.name }),
      h("td", { text: [u.is_admin && "admin", u.can_execute ? "may run" : "runs nothing", u.disabled_at && "disabled", !u.email_verified && "unverified"].filter(Boolean).join(", ") }),
      h("td", { class: "row" },
        h("button", { type: "button", class: "secondary", onclick: () => act(u, u.disabled_at ? "enable" : "disable") }, u.disabled_at ? "Enable" : "Disable"),
        h("button", { type: "button", class: "secondary", onclick: () => act(u, u.can_execute ? "deny-exec" : "allow-exec") }, u.can_execute ? "Deny exec" : "Allow exec"),
        h("button", { type: "button", class: "secondary", onclick: () => act(u, u.is_admin ? "revoke-admin" : "grant-admin") }, u.is_admin ? "Revoke admin" : "Make admin")))));
  };
  const loadInvites = async () => {
    const r = await api("GET", "/api/admin/invitations");
    invites.replaceChildren(...r.items.map((i) => h("tr", {}, h("td", { text: i.email }), h("td", { text: when(i.expires_at) }), h("td", { text: i.used_at ? `used ${when(i.used_at)}` : "open" }),
      h("td", {}, i.used_at ? "" : h("button", { type: "button", class: "secondary", onclick: async () => { await api("DELETE", `/api/admin/invitations/${i.id}`); loadInvites(); } }, "Withdraw")))));
  };
  const create = h("form", { class: "row", "aria-label": "Create an account" },
    h("input", { name: "email", type: "email", required: true, placeholder: "email", "aria-label": "Email" }), h("input", { name: "name", placeholder: "name", "aria-label": "Name" }),
    h("button", { type: "submit" }, "Create account"));
  create.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(create);
    try {
      const r = await api("POST", "/api/admin/users", { email: f.get("email"), name: f.get("name") || undefined });
      link.replaceChildren("Send them this one-time link to choose a password: ", h("code", { text: r.setup_url }));
      create.reset(); loadUsers();
    } catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  const invite = h("form", { class: "row", "aria-label": "Invite someone" },
    h("input", { name: "email", type: "email", required: true, placeholder: "email", "aria-label": "Email to invite" }),
    h("input", { name: "ttl_hours", type: "number", min: 1, max: 720, placeholder: "hours (72)", "aria-label": "Valid for hours" }),
    h("button", { type: "submit" }, "Invite"));
  invite.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(invite);
    try {
      const r = await api("POST", "/api/admin/invitations", { email: f.get("email"), ttl_hours: f.get("ttl_hours") ? +f.get("ttl_hours") : undefined });
      link.replaceChildren("Invitation link (single use; also mailed): ", h("code", { text: r.url }));
      invite.reset(); loadInvites();
    } catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  let t = null;
  search.oninput = () => { clearTimeout(t); t = setTimeout(loadUsers, 200); };
  await Promise.all([loadUsers(), loadInvites()]);
  return { el: h("section", { class: "pad" }, h("h1", { text: "Instance admin" }), msg, link,
    h("h2", { text: "Accounts" }), search, h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Email", "Name", "State", ""].map((x) => h("th", { text: x })))), users),
    h("h3", { text: "Create an account" }), create,
    h("h2", { text: "Invitations" }), invite, h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Email", "Expires", "State", ""].map((x) => h("th", { text: x })))), invites)), title: "Admin" };
}
