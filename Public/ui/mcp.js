// The workspace's tool registry: registered MCP servers (refresh, health, enable, remove), their
// credentials (names only; values are sealed on the server and never shown again), and the
// catalogue of every tool with a form that calls one.
import { api } from "./api.js";
import { h } from "./dom.js";
import { state } from "./main.js";

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

export async function mcpView() {
  const servers = h("tbody"), tokens = h("ul", { class: "plain" }), tools = h("tbody");
  const msg = h("p", { role: "status" }), result = h("pre", { class: "tool-out", "aria-label": "Tool result" });
  const toolSelect = h("select", { name: "tool", "aria-label": "Tool", required: true });
  const tokenSelect = h("select", { name: "token_id", "aria-label": "Credential" });
  const say = (text, bad) => { msg.textContent = text; msg.className = bad ? "bad" : "ok"; };
  const act = async (f) => { try { await f(); } catch (e) { say(e.message, true); } };

  async function loadServers() {
    const r = await api("GET", `/api/mcp/servers?ws_id=${state.ws}`);
    servers.replaceChildren(...r.items.map((s) => h("tr", {},
      h("td", {}, h("code", { text: s.name })), h("td", { text: s.transport }),
      h("td", {}, h("code", { text: s.url || [s.command, ...s.args].join(" ") })),
      h("td", { text: s.enabled ? `${s.tool_count} tools` : "disabled" }),
      h("td", { text: s.protocol_version ? `${s.protocol_version} · ${when(s.refreshed_at)}` : "not refreshed" }),
      h("td", { class: s.last_error ? "bad" : "muted", text: s.last_error || "" }),
      h("td", { class: "row" },
        h("button", { type: "button", "aria-label": `Refresh ${s.name}`, onclick: () => act(async () => {
          const x = await api("POST", `/api/mcp/servers/${s.id}/refresh`); say(`${s.name}: ${x.tools} tools (${x.protocol_version})`);
        }).finally(loadAll) }, "Refresh"),
        h("button", { type: "button", class: "secondary", "aria-label": `Check ${s.name}`, onclick: () => act(async () => {
          const x = await api("GET", `/api/mcp/servers/${s.id}/health`);
          say(x.ok ? `${s.name} answers (${x.protocol_version}, ${x.latency_ms} ms)` : `${s.name}: ${x.error}`, !x.ok);
        }) }, "Check"),
        h("button", { type: "button", class: "secondary", "aria-label": `${s.enabled ? "Disable" : "Enable"} ${s.name}`,
          onclick: () => act(async () => { await api("PATCH", `/api/mcp/servers/${s.id}`, { enabled: !s.enabled }); await loadAll(); }) },
          s.enabled ? "Disable" : "Enable"),
        h("button", { type: "button", class: "secondary", "aria-label": `Remove ${s.name}`, onclick: () => act(async () => {
          if (!confirm(`Remove the MCP server ${s.name} and its tools?`)) return;
          await api("DELETE", `/api/mcp/servers/${s.id}`); say(`Removed ${s.name}.`); await loadAll();
        }) }, "Remove")))));
    if (!r.items.length) servers.append(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No MCP servers registered." })));
  }

  async function loadTokens() {
    const r = await api("GET", `/api/mcp/tokens?ws_id=${state.ws}`);
    tokens.replaceChildren(...r.items.map((t) => h("li", {}, h("code", { text: t.name }), ` ${t.kind} · ${when(t.created_at)} `,
      h("button", { type: "button", class: "secondary", "aria-label": `Delete credential ${t.name}`, onclick: () => act(async () => {
        await api("DELETE", `/api/mcp/tokens/${t.id}`); await loadAll();
      }) }, "Delete"))));
    tokenSelect.replaceChildren(h("option", { value: "" }, "no credential"), ...r.items.map((t) => h("option", { value: t.id }, t.name)));
  }

  async function loadTools(q = "") {
    const r = await api("GET", `/api/mcp?ws_id=${state.ws}&q=${encodeURIComponent(q)}`);
    tools.replaceChildren(...r.items.map((t) => h("tr", {},
      h("td", {}, h("code", { text: t.name })), h("td", { text: t.origin }), h("td", { text: t.enabled ? "" : "disabled" }),
      h("td", { class: "muted", text: (t.description || "").slice(0, 160) }))));
    const current = toolSelect.value;
    toolSelect.replaceChildren(...r.items.filter((t) => t.enabled).map((t) => h("option", { value: t.name }, t.name)));
    if (current) toolSelect.value = current;
  }

  const loadAll = () => Promise.all([loadServers(), loadTokens(), loadTools(search.value)]).catch((e) => say(e.message, true));

  const register = h("form", { class: "stack", "aria-label": "Register an MCP server" },
    h("label", {}, "Name (a-z, 0-9, _ -)", h("input", { name: "name", required: true, pattern: "[a-z0-9_-]{1,32}", autocomplete: "off" })),
    h("label", {}, "Transport", h("select", { name: "transport" }, h("option", { value: "http" }, "http"), h("option", { value: "stdio" }, "stdio"))),
    h("label", {}, "URL (http) or command and arguments (stdio)", h("input", { name: "target", required: true, autocomplete: "off" })),
    h("label", {}, "Credential", tokenSelect),
    h("button", { type: "submit" }, "Register"));
  register.onsubmit = (e) => {
    e.preventDefault();
    const f = new FormData(register);
    const body = { ws_id: state.ws, name: f.get("name"), transport: f.get("transport") };
    if (body.transport === "http") body.url = f.get("target").trim();
    else { const parts = f.get("target").trim().split(/\s+/); body.command = parts[0]; body.args = parts.slice(1); }
    if (f.get("token_id")) body.token_id = f.get("token_id");
    act(async () => { const s = await api("POST", "/api/mcp/servers", body); register.reset(); say(`Registered ${s.name}; refresh it to list its tools.`); await loadAll(); });
  };

  const tokenForm = h("form", { class: "row", "aria-label": "Add a credential" },
    h("input", { name: "name", placeholder: "name", "aria-label": "Credential name", required: true, pattern: "[a-z0-9_-]{1,32}" }),
    h("input", { name: "token", type: "password", placeholder: "bearer token", "aria-label": "Bearer token", required: true, autocomplete: "new-password", class: "grow" }),
    h("button", { type: "submit" }, "Add"));
  tokenForm.onsubmit = (e) => {
    e.preventDefault();
    const f = new FormData(tokenForm);
    act(async () => { await api("POST", "/api/mcp/tokens", { ws_id: state.ws, name: f.get("name"), token: f.get("token") }); tokenForm.reset(); say("Credential stored (it is not shown again)."); await loadAll(); });
  };

  const search = h("input", { type: "search", placeholder: "filter tools", "aria-label": "Filter tools" });
  search.oninput = () => loadTools(search.value).catch(() => {});
  const args = h("textarea", { name: "arguments", rows: 4, class: "code-input", spellcheck: "false", "aria-label": "Arguments (JSON)" });
  args.value = "{}";
  const invoke = h("form", { class: "stack", "aria-label": "Call a tool" }, toolSelect, args, h("button", { type: "submit" }, "Call"));
  invoke.onsubmit = (e) => {
    e.preventDefault();
    let parsed;
    try { parsed = JSON.parse(args.value || "{}"); } catch (err) { say(`Arguments are not JSON: ${err.message}`, true); return; }
    act(async () => {
      const r = await api("POST", "/api/mcp", { ws_id: state.ws, tool: toolSelect.value, arguments: parsed });
      const text = (r.content || []).map((c) => c.text ?? `[${c.type}]`).join("\n");
      result.textContent = `${r.is_error ? "error · " : ""}${r.duration_ms} ms\n${text}`;
      result.className = `tool-out ${r.is_error ? "bad" : "ok"}`;
    });
  };

  await loadAll();
  return { el: h("section", { class: "pad" }, h("h1", { text: "Tools (MCP)" }), msg,
    h("h2", { text: "Servers" }),
    h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Name", "Transport", "Where", "Tools", "Protocol", "Last error", ""].map((t) => h("th", { text: t })))), servers),
    h("details", {}, h("summary", {}, "Register a server"), register),
    h("h2", { text: "Credentials" }), tokens, tokenForm,
    h("h2", { text: "Catalogue" }), search,
    h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Tool", "Origin", "", "Description"].map((t) => h("th", { text: t })))), tools),
    h("h2", { text: "Call a tool" }), invoke, result), title: "Tools" };
}
