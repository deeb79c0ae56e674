// Kiln web UI: plain pages calling the JSON API. No framework.
"use strict";

const $ = (sel) => document.querySelector(sel);
let csrf = null;

async function api(method, path, body, stepUp = true) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const json = r.status === 204 ? {} : await r.json().catch(() => ({}));
  if (json.csrf_token) csrf = json.csrf_token;
  // A sensitive action asks for the password or a code once, then is retried once.
  if (r.status === 401 && json?.error?.code === "step_up_required" && stepUp && (await askStepUp())) {
    return api(method, path, body, false);
  }
  return { ok: r.ok, status: r.status, json };
}

// The step-up prompt: a dialog asking for the password or an authenticator code; true once accepted.
function askStepUp() {
  let dlg = document.getElementById("dlg-stepup");
  if (!dlg) {
    dlg = document.createElement("dialog");
    dlg.id = "dlg-stepup";
    dlg.setAttribute("aria-label", "Confirm it is you");
    const form = document.createElement("form");
    const label = document.createElement("label");
    label.textContent = "Password or authenticator code ";
    const input = document.createElement("input");
    input.name = "secret"; input.type = "password"; input.required = true; input.autocomplete = "current-password";
    label.append(input);
    const p = document.createElement("p");
    p.textContent = "This action needs your password, or a code from your authenticator app, from the last 15 minutes.";
    const err = document.createElement("p");
    err.className = "status bad"; err.id = "stepup-error"; err.setAttribute("role", "alert");
    const ok = document.createElement("button"); ok.type = "submit"; ok.textContent = "Confirm";
    const cancel = document.createElement("button"); cancel.type = "button"; cancel.textContent = "Cancel"; cancel.id = "stepup-cancel";
    form.append(p, label, err, ok, cancel);
    dlg.append(form);
    document.body.append(dlg);
  }
  const form = dlg.querySelector("form"), err = dlg.querySelector("#stepup-error");
  form.reset(); err.textContent = "";
  return new Promise((resolve) => {
    const finish = (v) => { dlg.close(); resolve(v); };
    form.onsubmit = async (e) => {
      e.preventDefault();
      const secret = new FormData(form).get("secret");
      const body = /^[0-9]{6}$/.test(secret) || /^[a-z0-9]{4,5}-[a-z0-9]{4,5}$/i.test(secret) ? { code: secret } : { password: secret };
      const r = await api("POST", "/api/auth/step-up", body, false);
      if (r.ok) finish(true); else err.textContent = errorText(r);
    };
    dlg.querySelector("#stepup-cancel").onclick = () => finish(false);
    dlg.showModal();
    form.querySelector("input").focus();
  });
}

// Where to go after signing in: the page that sent us here (same site only), else the workspace.
function nextPage() {
  const next = new URLSearchParams(location.search).get("next") || "";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/w/";
}

function say(text, bad) {
  const s = document.querySelector(".status");
  if (!s) return;
  s.textContent = text;
  s.className = "status" + (bad ? " bad" : " ok");
}

const errorText = (res) => res.json?.error?.message || `Request failed (${res.status})`;
const formData = (form) => Object.fromEntries(new FormData(form));
const fmt = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };

async function session() {
  const r = await api("GET", "/api/auth/session");
  return r.ok ? r.json : null;
}

async function nav() {
  const n = $("#nav");
  if (!n) return;
  const s = await session();
  if (s && !s.mfa_required) {
    n.innerHTML = '<a href="/w/">Workspace</a> <a href="/account.html">Account</a> <button type="button" id="logout" class="link">Sign out</button>';
    $("#logout").addEventListener("click", async () => { await api("POST", "/auth/logout"); location.href = "/login.html"; });
  } else {
    n.innerHTML = '<a href="/login.html">Sign in</a>';
  }
}

const pages = {
  async home() {
    const status = $("#status");
    try {
      const r = await fetch("/readyz");
      status.textContent = r.ok ? "ready" : "not ready";
      status.className = "pill " + (r.ok ? "ok" : "bad");
    } catch { status.textContent = "offline"; status.className = "pill bad"; }
    const params = new URLSearchParams(location.search);
    if (location.pathname === "/setup" && params.get("token")) {
      $("#home").hidden = true;
      $("#setup").hidden = false;
      $("#setup-form").addEventListener("submit", async (e) => {
        e.preventDefault();
        const d = formData(e.target);
        const body = { token: params.get("token"), password: d.password };
        if (d.email) body.email = d.email;
        if (d.name) body.name = d.name;
        const r = await api("POST", "/auth/setup", body);
        const out = $("#setup-result");
        if (r.ok) {
          out.innerHTML = `Account created for <strong></strong>. <a href="/login.html" id="setup-login">Sign in</a>`;
          out.querySelector("strong").textContent = r.json.user.email;
          e.target.querySelector("button").disabled = true;
        } else out.textContent = errorText(r);
      });
    }
  },

  async login() {
    $("#login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/auth/login", formData(e.target));
      if (!r.ok) return say(errorText(r), true);
      if (r.json.mfa_required) {
        e.target.hidden = true;
        $("#mfa-form").hidden = false;
        $("#mfa-form input").focus();
        return say("Password accepted. One more step.");
      }
      location.href = nextPage();
    });
    $("#mfa-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/api/auth/mfa-verify", formData(e.target));
      if (!r.ok) return say(errorText(r), true);
      location.href = nextPage();
    });
  },

  async register() {
    // An invitation link (/register?invitation=…) carries its token; the account is ready at once.
    const invitation = new URLSearchParams(location.search).get("invitation");
    $("#register-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = formData(e.target);
      if (invitation) body.invitation = invitation;
      const r = await api("POST", "/auth/register", body);
      if (!r.ok) return say(errorText(r), true);
      e.target.hidden = true;
      say(invitation ? "Your account is ready: sign in." : `Almost done: we sent a confirmation link to ${r.json.user.email}.`);
    });
  },

  // A workspace invitation (/invite/<token>): the signed-in invitee joins; someone new registers
  // through it (the account is for the invited address) and is signed in.
  async invite() {
    const token = location.pathname.split("/").filter(Boolean)[1] || "";
    const path = `/api/collab/invitations/${encodeURIComponent(token)}/accept`;
    const s = await session();
    const joined = (ws) => { location.href = `/w/${ws}`; };
    if (s && !s.mfa_required) {
      $("#invite-me").textContent = s.user.email;
      $("#accept-signed-in").hidden = false;
      $("#accept").addEventListener("click", async () => {
        const r = await api("POST", path, {});
        if (!r.ok) return say(errorText(r), true);
        joined(r.json.ws_id);
      });
      return;
    }
    $("#invite-signin").href = "/login.html?next=" + encodeURIComponent(location.pathname);
    $("#accept-new").hidden = false;
    $("#invite-register-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = formData(e.target);
      const r = await api("POST", path, body);
      if (!r.ok) return say(errorText(r), true);
      const login = await api("POST", "/auth/login", { email: r.json.email, password: body.password });
      if (!login.ok) return say("Your account is ready: sign in.", false);
      joined(r.json.ws_id);
    });
  },

  async forgot() {
    $("#forgot-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/auth/forgot", formData(e.target));
      say(r.ok ? r.json.message : errorText(r), !r.ok);
    });
  },

  async reset() {
    const token = new URLSearchParams(location.search).get("token");
    $("#reset-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/auth/reset", { token, password: formData(e.target).password });
      if (!r.ok) return say(errorText(r), true);
      e.target.hidden = true;
      say("Password changed. All sessions were signed out.");
      const a = document.createElement("a"); a.href = "/login.html"; a.textContent = " Sign in";
      document.querySelector(".status").append(a);
    });
  },

  async account() {
    const s = await session();
    if (!s || s.mfa_required) { location.href = "/login.html"; return; }
    const user = s.user;
    const profile = $("#profile-form");
    profile.name.value = user.name;
    profile.email.value = user.email;
    profile.avatar_url.value = user.avatar_url || "";
    profile.addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/api/account/update-profile", formData(e.target));
      say(r.ok ? (r.json.email_verification_sent ? "Saved. Confirm the new address from the mail we sent." : "Profile saved.") : errorText(r), !r.ok);
    });
    $("#password-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/api/account/change-password", formData(e.target));
      say(r.ok ? "Password changed; your other sessions were signed out." : errorText(r), !r.ok);
      if (r.ok) e.target.reset();
    });

    const mfaState = () => {
      $("#mfa-state").textContent = user.mfa_enabled ? "On: sign-in asks for a code from your app." : "Off.";
      $("#mfa-start").hidden = user.mfa_enabled;
      $("#mfa-disable-form").hidden = !user.mfa_enabled;
    };
    mfaState();
    $("#mfa-start").addEventListener("click", async () => {
      const r = await api("POST", "/api/auth/mfa-setup");
      if (!r.ok) return say(errorText(r), true);
      $("#mfa-enrol").hidden = false;
      $("#mfa-start").hidden = true;
      $("#mfa-secret").textContent = r.json.secret;
      $("#mfa-secret").dataset.otpauth = r.json.otpauth_url;
      const qr = $("#mfa-qr");
      qr.textContent = "";
      if (r.json.qr_svg) {
        const img = document.createElement("img");
        img.alt = "QR code for your authenticator app";
        img.src = "data:image/svg+xml;base64," + btoa(r.json.qr_svg);
        img.width = 200;
        qr.append(img);
      }
      const list = $("#mfa-recovery");
      list.textContent = "";
      for (const c of r.json.recovery_codes) { const li = document.createElement("li"); li.textContent = c; list.append(li); }
      $("#mfa-confirm-form input").focus();
    });
    $("#mfa-confirm-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/api/auth/mfa-verify", formData(e.target));
      if (!r.ok) return say(errorText(r), true);
      user.mfa_enabled = true;
      $("#mfa-enrol").hidden = true;
      mfaState();
      say("Two-factor authentication is on.");
    });
    $("#mfa-disable-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("POST", "/api/auth/mfa-disable", formData(e.target));
      if (!r.ok) return say(errorText(r), true);
      user.mfa_enabled = false;
      mfaState();
      say("Two-factor authentication is off.");
    });

    async function loadSessions() {
      const r = await api("GET", "/api/account/sessions");
      const body = $("#sessions");
      body.textContent = "";
      for (const s of r.json.items || []) {
        const tr = document.createElement("tr");
        tr.append(cell(fmt(s.created_at)), cell(fmt(s.last_seen_at)), cell(s.ip), cell(s.user_agent.slice(0, 60)));
        const td = document.createElement("td");
        if (s.current) td.textContent = "this browser";
        else {
          const b = document.createElement("button");
          b.type = "button"; b.textContent = "Sign out";
          b.addEventListener("click", async () => { await api("POST", `/api/account/sessions/${s.id}/revoke`); loadSessions(); });
          td.append(b);
        }
        tr.append(td);
        body.append(tr);
      }
    }

    async function loadKeys() {
      const r = await api("GET", "/api/account/api-keys");
      const body = $("#keys");
      body.textContent = "";
      for (const k of r.json.items || []) {
        const tr = document.createElement("tr");
        tr.append(cell(k.name), cell(k.prefix + "…"), cell(k.scopes.join(", ")), cell(fmt(k.last_used_at)));
        const td = document.createElement("td");
        const b = document.createElement("button");
        b.type = "button"; b.textContent = "Revoke";
        b.addEventListener("click", async () => { await api("DELETE", `/api/account/api-keys/${k.id}`); loadKeys(); });
        td.append(b); tr.append(td); body.append(tr);
      }
    }
    $("#key-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const d = formData(e.target);
      const body = { name: d.name, scopes: d.scopes.split(",").map((s) => s.trim()).filter(Boolean) };
      if (d.expires_in_days) body.expires_in_days = Number(d.expires_in_days);
      const r = await api("POST", "/api/account/api-keys", body);
      if (!r.ok) return say(errorText(r), true);
      $("#key-once").hidden = false;
      $("#key-value").textContent = r.json.key;
      $("#key-copy").onclick = async () => {
        try { await navigator.clipboard.writeText(r.json.key); say("Copied."); } catch { say("Select the key and copy it by hand.", true); }
      };
      e.target.reset();
      loadKeys();
    });

    const deleteState = () => {
      $("#delete-state").textContent = user.delete_after ? `Your account will be deleted on ${fmt(user.delete_after)}.` : "";
      $("#delete-request").hidden = !!user.delete_after;
      $("#delete-cancel").hidden = !user.delete_after;
    };
    deleteState();
    $("#delete-request").addEventListener("click", async () => {
      const r = await api("POST", "/api/account/request-delete");
      if (r.ok) { user.delete_after = r.json.delete_after; deleteState(); } else say(errorText(r), true);
    });
    $("#delete-cancel").addEventListener("click", async () => {
      const r = await api("POST", "/api/account/cancel-delete");
      if (r.ok) { user.delete_after = null; deleteState(); } else say(errorText(r), true);
    });
    loadSessions();
    loadKeys();
  },
};

(async function main() {
  const page = document.body.dataset.page || "home";
  await nav();
  if (pages[page]) await pages[page]();
})();
