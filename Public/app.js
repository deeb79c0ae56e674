// Kiln web UI: status and the one-time account setup page.
(async function () {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/readyz");
    status.textContent = r.ok ? "ready" : "not ready";
    status.className = "pill " + (r.ok ? "ok" : "bad");
  } catch { status.textContent = "offline"; status.className = "pill bad"; }

  const params = new URLSearchParams(location.search);
  if (location.pathname === "/setup" && params.get("token")) {
    document.getElementById("home").hidden = true;
    document.getElementById("setup").hidden = false;
    const form = document.getElementById("setup-form");
    const result = document.getElementById("setup-result");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      const body = { token: params.get("token"), password: data.password };
      if (data.email) body.email = data.email;
      if (data.name) body.name = data.name;
      const r = await fetch("/auth/setup", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const json = await r.json().catch(() => ({}));
      result.textContent = r.ok ? `Account created for ${json.user.email}. You can sign in now.` : (json.error?.message || "Setup failed");
      if (r.ok) form.querySelector("button").disabled = true;
    });
  }
})();
