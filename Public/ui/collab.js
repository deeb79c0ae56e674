// Collab: the workspace's activity (live), the notification bell and list with settings, reviews
// (request, read, comment, verdict), invitations, and the share dialog. Each control calls one
// documented route; every text from the server goes in as text.
import { api, stream } from "./api.js";
import { h, $ } from "./dom.js";
import { state, say, go } from "./main.js";

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const KINDS = {
  review_requested: "A review is asked of you", review_verdict: "A verdict on your review request",
  mention: "You are mentioned", run_ended: "A run you started ended", invited: "You are invited or added",
  role_changed: "Your role changed", share_link_opened: "Your share link is opened the first time",
  approval_requested: "An action waits for an approval", approval_decided: "Your held action is decided",
};

// --- the bell: the unread count, live ---
let bellStream = null;
export async function startBell() {
  const count = $("#bell-count");
  const show = (n) => { count.textContent = n > 0 ? String(n) : ""; count.hidden = n <= 0; $("#bell").setAttribute("aria-label", `Notifications, ${n} unread`); };
  try { show((await api("GET", "/api/collab/notifications?unread=1&limit=1")).unread_count); } catch { show(0); }
  $("#bell").onclick = () => go(`/w/${state.ws}/notifications`);
  bellStream?.close();
  bellStream = stream("/api/collab/notifications/stream", {
    notification: (n) => { show(n.unread_count); say(n.title); },
    read: (r) => show(r.unread_count),
  });
}

function itemLink(subject) {
  if (!subject) return null;
  if (subject.type === "review") return `/w/${state.ws}/review/${subject.id}`;
  if (subject.type === "approval") return `/w/${state.ws}/approvals`;
  if (subject.type === "run") {
    const p = state.projects[0];
    return p ? `/w/${state.ws}/p/${p.id}/run/${subject.id}` : null;
  }
  return null;
}

// --- activity ---
export async function activityView() {
  const list = h("ol", { class: "feed", "aria-label": "Activity" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Older");
  const kind = h("select", { "aria-label": "Show" }, ...[["", "Everything"], ["run", "Agent runs"], ["file", "File changes"], ["job", "Jobs"], ["test", "Test runs"], ["review", "Reviews"], ["member", "Members"], ["share_link", "Share links"], ["approval", "Approvals"], ["project", "Rescans"]].map(([v, t]) => h("option", { value: v, text: t })));
  let cursor = null, es = null, seen = new Set();
  const row = (i) => {
    const link = itemLink(i.subject);
    const title = i.subject?.title || "";
    return h("li", { "data-id": i.id, "data-kind": i.kind },
      h("span", { class: "pill", text: i.kind }), " ",
      h("strong", { text: i.actor_name || "Kiln" }), " ", i.summary, " ",
      link ? h("a", { href: link, onclick: (e) => { e.preventDefault(); go(link); } }, title ? "open" : "") : null,
      h("div", { class: "muted", text: when(i.created_at) }));
  };
  const load = async (older) => {
    const q = `/api/collab/activity?ws_id=${state.ws}&limit=50${kind.value ? `&kind=${kind.value}` : ""}${older && cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const r = await api("GET", q);
    if (!older) { list.replaceChildren(); seen = new Set(); }
    for (const i of r.items) { seen.add(i.id); list.append(row(i)); }
    cursor = r.next_cursor;
    more.hidden = !cursor;
    if (!list.childElementCount) list.append(h("li", { class: "muted", text: "Nothing happened here yet." }));
  };
  more.onclick = () => load(true);
  kind.onchange = () => load(false);
  await load(false);
  es = stream(`/api/collab/activity/stream?ws_id=${state.ws}`, {});
  es.onmessage = null;
  // Every event's type is its kind: listen to them all through the generic handler of each kind seen.
  const onItem = (e) => {
    const i = JSON.parse(e.data);
    if (seen.has(i.id) || (kind.value && !i.kind.startsWith(kind.value + "."))) return;
    seen.add(i.id);
    list.querySelector("li.muted")?.remove();
    list.prepend(row(i));
  };
  for (const k of ["run.started", "run.completed", "run.failed", "run.cancelled", "file.changed", "run.rolled_back", "job.finished", "test.finished", "project.rescanned", "project.rescan_failed", "member.joined", "member.added", "member.left", "member.removed", "member.role_changed", "review.requested", "review.commented", "review.verdict", "share_link.created", "share_link.revoked", "invitation.created", "approval.requested", "approval.approved", "approval.rejected", "approval.expired", "approval.cancelled"]) {
    es.addEventListener(k, onItem);
  }
  return { el: h("section", { class: "pad" }, h("h1", { text: "Activity" }), h("div", { class: "row" }, kind), list, more), title: "Activity", close: () => es?.close() };
}

// --- notifications and their settings ---
export async function notificationsView() {
  const list = h("ul", { class: "feed", "aria-label": "Notifications" });
  const msg = h("p", { role: "status" });
  const load = async () => {
    const r = await api("GET", "/api/collab/notifications?limit=100");
    list.replaceChildren(...r.items.map((n) => {
      const link = itemLink(n.subject);
      const read = h("button", { type: "button", class: "secondary", hidden: n.read, "aria-label": `Mark read: ${n.title}` }, "Mark read");
      read.onclick = async () => { await api("POST", `/api/collab/notifications/${n.id}/read`); load(); };
      return h("li", { class: n.read ? "muted" : "" },
        link ? h("a", { href: link, onclick: (e) => { e.preventDefault(); go(link); } }, n.title) : n.title,
        " ", read, h("div", { class: "muted", text: when(n.created_at) }));
    }));
    if (!r.items.length) list.append(h("li", { class: "muted", text: "No notifications." }));
  };
  const all = h("button", { type: "button" }, "Mark all read");
  all.onclick = async () => { await api("POST", "/api/collab/notifications/read-all"); load(); };
  const settings = h("form", { class: "stack", "aria-label": "Notification settings" });
  const s = (await api("GET", "/api/collab/notification-settings")).settings;
  for (const [k, label] of Object.entries(KINDS)) {
    settings.append(h("label", { class: "row" }, h("span", { class: "grow", text: label }),
      h("select", { name: k, "aria-label": label }, ...[["in_app", "In Kiln"], ["email", "In Kiln and by mail"], ["off", "Off"]].map(([v, t]) => h("option", { value: v, selected: s[k] === v, text: t })))));
  }
  settings.append(h("p", { class: "muted", text: "Mail is batched: at most one mail per kind every ten minutes." }), h("button", { type: "submit" }, "Save"), msg);
  settings.onsubmit = async (e) => {
    e.preventDefault();
    try { await api("PUT", "/api/collab/notification-settings", { settings: Object.fromEntries(new FormData(settings)) }); msg.textContent = "Saved."; msg.className = "ok"; }
    catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  await load();
  return { el: h("section", { class: "pad" }, h("h1", { text: "Notifications" }), all, list, h("h2", { text: "Settings" }), settings), title: "Notifications" };
}

// --- reviews ---
async function memberOptions() {
  const r = await api("GET", `/api/workspaces/${state.ws}/members?limit=200`);
  return r.items.filter((m) => m.user_id !== state.user.id && m.role !== "viewer");
}

export async function reviewsView() {
  const rows = h("tbody");
  const filter = h("select", { "aria-label": "State" }, ...[["open", "Open"], ["approved", "Approved"], ["changes_requested", "Changes requested"], ["", "All"]].map(([v, t]) => h("option", { value: v, text: t })));
  const load = async () => {
    const r = await api("GET", `/api/collab/reviews?ws_id=${state.ws}${filter.value ? `&state=${filter.value}` : ""}`);
    rows.replaceChildren(...r.items.map((v) => h("tr", {},
      h("td", {}, h("a", { href: `/w/${state.ws}/review/${v.id}`, onclick: (e) => { e.preventDefault(); go(`/w/${state.ws}/review/${v.id}`); } }, v.subject?.title || v.id)),
      h("td", { text: v.reviewers.map((x) => `${x.name}${x.verdict ? ` (${x.verdict})` : ""}`).join(", ") }),
      h("td", {}, h("span", { class: `pill ${v.state === "approved" ? "ok" : v.state === "open" ? "" : "bad"}`, text: v.state })),
      h("td", { text: when(v.updated_at) }))));
    if (!r.items.length) rows.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No reviews." })));
  };
  filter.onchange = load;
  const msg = h("p", { role: "status" });
  const people = await memberOptions();
  const form = h("form", { class: "stack", "aria-label": "Request a review" },
    h("label", {}, "What", h("select", { name: "type" }, ...[["run", "An agent run (its id)"], ["file", "A file (project id and path)"], ["diff", "A project's changes (project id)"], ["job", "A job (its id)"]].map(([v, t]) => h("option", { value: v, text: t })))),
    h("label", {}, "Id", h("input", { name: "id", required: true, placeholder: "run_… / prj_… / job_…" })),
    h("label", {}, "Path (files)", h("input", { name: "path", placeholder: "src/app.py" })),
    h("label", {}, "Reviewers", h("select", { name: "reviewers", multiple: true, required: true }, ...people.map((m) => h("option", { value: m.user_id, text: `${m.name || ""} <${m.email || m.user_id}>` })))),
    h("label", {}, "Note", h("textarea", { name: "note", rows: 3, maxlength: 4000 })),
    h("button", { type: "submit" }, "Request review"), msg);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const subject = { type: f.get("type"), id: f.get("id").trim() };
    if (f.get("path")) subject.path = f.get("path").trim();
    try {
      const r = await api("POST", "/api/collab/request-review", { ws_id: state.ws, subject, reviewers: f.getAll("reviewers"), note: f.get("note") });
      go(`/w/${state.ws}/review/${r.id}`);
    } catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  await load();
  const table = h("table", { class: "table", "aria-label": "Reviews" }, h("thead", {}, h("tr", {}, ...["Subject", "Reviewers", "State", "Updated"].map((t) => h("th", { text: t })))), rows);
  return { el: h("section", { class: "pad" }, h("h1", { text: "Reviews" }), filter, table, h("h2", { text: "Ask for a review" }), form), title: "Reviews", onShow: load };
}

export async function reviewView(id) {
  const box = h("div");
  const msg = h("p", { role: "status" });
  const load = async () => {
    const r = await api("GET", `/api/collab/reviews/${id}?ws_id=${state.ws}`);
    const mine = r.reviewers.some((x) => x.user_id === state.user.id);
    const verdicts = mine ? h("div", { class: "row" }, ...[["approve", "Approve"], ["request_changes", "Request changes"], ["comment", "Comment only"]].map(([v, t]) =>
      h("button", { type: "button", class: v === "approve" ? "" : "secondary", onclick: async () => {
        try { await api("POST", `/api/collab/reviews/${id}/verdict`, { verdict: v }); load(); } catch (e) { msg.textContent = e.message; msg.className = "bad"; }
      } }, t))) : null;
    const diffs = (r.run?.diffs || []).map((d) => h("details", { open: true }, h("summary", { text: d.path }), h("pre", { class: "diff", text: d.diff })));
    const comments = h("ol", { class: "feed", "aria-label": "Comments" }, ...(r.comments || []).map((c) =>
      h("li", {}, h("strong", { text: c.name }), c.path ? h("span", { class: "muted", text: ` on ${c.path}${c.line ? `:${c.line}` : ""}` }) : null,
        h("div", { class: "comment", text: c.body }), h("div", { class: "muted", text: when(c.created_at) }))));
    const form = h("form", { class: "stack", "aria-label": "Comment" },
      h("textarea", { name: "body", rows: 3, required: true, placeholder: "Write a comment; @name tells a member", "aria-label": "Comment" }),
      h("div", { class: "row" }, h("input", { name: "path", placeholder: "file (optional)", "aria-label": "File" }), h("input", { name: "line", type: "number", min: 1, placeholder: "line", "aria-label": "Line" }),
        h("button", { type: "submit" }, "Comment")));
    form.onsubmit = async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const body = { body: f.get("body") };
      if (f.get("path")) body.path = f.get("path");
      if (f.get("line")) body.line = Number(f.get("line"));
      try { await api("POST", `/api/collab/reviews/${id}/comments`, body); load(); } catch (err) { msg.textContent = err.message; msg.className = "bad"; }
    };
    box.replaceChildren(...[
      h("h1", { text: `Review: ${r.subject?.title || id}` }),
      h("p", {}, h("span", { class: `pill ${r.state === "approved" ? "ok" : r.state === "open" ? "" : "bad"}`, text: r.state }), " ",
        r.reviewers.map((x) => `${x.name}: ${x.verdict || "waiting"}`).join(" · ")),
      r.note ? h("blockquote", { text: r.note }) : null,
      verdicts, msg,
      r.run ? h("div", {}, h("h2", { text: "The run" }), h("pre", { text: r.run.prompt }), ...diffs) : null,
      r.receipt ? h("p", { class: "muted" }, "Receipt ", h("code", { text: (r.receipt.hash || "").slice(0, 16) + "…" })) : null,
      h("h2", { text: "Comments" }), comments, form].filter(Boolean));
  };
  await load();
  return { el: h("section", { class: "pad" }, box), title: "Review" };
}

// --- invitations ---
export async function inviteView() {
  const rows = h("tbody");
  const msg = h("p", { role: "status" });
  const load = async () => {
    const r = await api("GET", `/api/collab/invitations?ws_id=${state.ws}`);
    rows.replaceChildren(...r.items.map((i) => {
      const withdraw = i.state === "pending" ? h("button", { type: "button", class: "secondary", "aria-label": `Withdraw the invitation of ${i.email}`, onclick: async () => {
        try { await api("DELETE", `/api/collab/invitations/${i.id}?ws_id=${state.ws}`); load(); } catch (e) { msg.textContent = e.message; msg.className = "bad"; }
      } }, "Withdraw") : null;
      return h("tr", {}, h("td", { text: i.email }), h("td", { text: i.role }), h("td", { text: i.state }), h("td", { text: when(i.expires_at) }), h("td", {}, withdraw));
    }));
    if (!r.items.length) rows.append(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No invitations yet." })));
  };
  const form = h("form", { class: "row", "aria-label": "Invite someone" },
    h("input", { name: "email", type: "email", required: true, placeholder: "their email", "aria-label": "Email" }),
    h("select", { name: "role", "aria-label": "Role" }, ...["viewer", "member", "admin", "owner"].map((x) => h("option", { value: x, selected: x === "member", text: x }))),
    h("button", { type: "submit" }, "Invite"));
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try { await api("POST", "/api/collab/invite", { ws_id: state.ws, email: f.get("email"), role: f.get("role") }); form.reset(); msg.textContent = "Invitation mailed; the link works once, for seven days."; msg.className = "ok"; load(); }
    catch (err) { msg.textContent = err.message; msg.className = "bad"; }
  };
  await load();
  const table = h("table", { class: "table", "aria-label": "Invitations" }, h("thead", {}, h("tr", {}, ...["Email", "Role", "State", "Expires", ""].map((t) => h("th", { text: t })))), rows);
  return { el: h("section", { class: "pad" }, h("h1", { text: "Invite people" }), form, msg, table), title: "Invite" };
}

// --- the share dialog: a read-only link to a run, a file or a receipt chain ---
export function shareButton(subject, label = "Share…") {
  const b = h("button", { type: "button", class: "secondary" }, label);
  b.onclick = () => shareDialog(subject);
  return b;
}

export function shareDialog(subject) {
  const out = h("p", { role: "status" });
  const form = h("form", { class: "stack", method: "dialog" },
    h("h2", { text: "Share read-only" }),
    h("p", { class: "muted", text: "Anyone with the link sees only this, without an account, until it expires or you revoke it." }),
    h("label", {}, "Expires after (hours, at most 720)", h("input", { name: "hours", type: "number", min: 1, max: 720, value: 72 })),
    h("label", {}, "Password (optional)", h("input", { name: "password", type: "password", autocomplete: "new-password" })),
    out,
    h("div", { class: "row" }, h("button", { type: "submit", value: "make" }, "Make link"), h("button", { type: "button", class: "secondary", onclick: () => dlg.close() }, "Close")));
  const dlg = h("dialog", { "aria-label": "Share" }, form);
  form.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { ws_id: state.ws, subject, expires_in_hours: Number(f.get("hours")) };
    if (f.get("password")) body.password = f.get("password");
    try {
      const r = await api("POST", "/api/collab/share-link", body);
      const field = h("input", { value: r.url, readonly: true, "aria-label": "Link", size: 60 });
      out.replaceChildren(field, " ", h("span", { class: "muted", text: `until ${when(r.expires_at)}; shown once` }));
      out.className = "ok";
      field.select();
    } catch (err) { out.textContent = err.message; out.className = "bad"; }
  };
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
}
