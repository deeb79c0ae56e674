// Notebooks: the project's list, and one notebook's cells (edit, run with Shift-Enter, outputs as
// text, ANSI, images and sanitised HTML), kernel state with interrupt and restart. Every change goes
// back with the notebook's ETag; a stale one (someone else saved) reloads the notebook.
import { api, csrfToken, APIError } from "./api.js";
import { h, ansi } from "./dom.js";
import { markdown } from "./markdown.js";
import { state, go, base, say } from "./main.js";

export async function notebooksView() {
  const p = state.project;
  const list = h("ul", { class: "plain" });
  const load = async () => {
    const r = await api("GET", `/api/notebook?project_id=${p.id}`);
    list.replaceChildren(...r.items.map((n) => h("li", {},
      h("a", { href: `${base()}/notebook/${n.path}`, onclick: (e) => { e.preventDefault(); go(`${base()}/notebook/${n.path}`); }, text: n.path }),
      h("span", { class: "muted", text: ` · ${n.cells} cells · ${n.kernel || "no kernel"}` }))));
    if (!r.items.length) list.append(h("li", { class: "muted", text: "No notebooks yet." }));
  };
  const form = h("form", { class: "row", "aria-label": "New notebook" },
    h("input", { name: "path", placeholder: "analysis.ipynb", "aria-label": "Notebook path", required: true, pattern: ".*\\.ipynb", class: "grow" }),
    h("button", { type: "submit" }, "Create"));
  form.onsubmit = async (e) => {
    e.preventDefault();
    const path = new FormData(form).get("path");
    try { await api("POST", "/api/notebook", { project_id: p.id, path }); go(`${base()}/notebook/${path}`); } catch (err) { say(err.message, true); }
  };
  await load();
  return { el: h("section", { class: "pad" }, h("h1", { text: "Notebooks" }), form, list), title: "Notebooks", onShow: load };
}

// HTML outputs keep their structure, nothing active: a short list of tags, no attributes.
const SAFE = new Set(["TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "B", "I", "EM", "STRONG", "P", "DIV", "SPAN", "BR", "PRE", "CODE", "UL", "OL", "LI", "H1", "H2", "H3", "H4", "H5", "H6"]);
function sanitised(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  const copy = (node) => {
    if (node.nodeType === Node.TEXT_NODE) return document.createTextNode(node.textContent);
    if (node.nodeType !== Node.ELEMENT_NODE) return null;
    const kids = [...node.childNodes].map(copy).filter(Boolean);
    if (!SAFE.has(node.tagName)) return kids.length ? h("span", {}, ...kids) : null;
    return h(node.tagName.toLowerCase(), {}, ...kids);
  };
  return h("div", { class: "nb-html" }, ...[...doc.body.childNodes].map(copy).filter(Boolean));
}

function outputEl(o) {
  const kind = o.output_type || o.type;
  if (kind === "stream") { const pre = h("pre", { class: `nb-out ${o.name === "stderr" ? "bad" : ""}` }); ansi(o.text || "", pre); return pre; }
  if (kind === "error") { const pre = h("pre", { class: "nb-out bad" }); ansi((o.traceback || []).join("\n") || `${o.ename}: ${o.evalue}`, pre); return pre; }
  const d = o.data || {};
  if (d["image/png"]) return h("img", { class: "nb-img", alt: "image output", src: `data:image/png;base64,${String(d["image/png"]).replace(/\s/g, "")}` });
  if (d["image/jpeg"]) return h("img", { class: "nb-img", alt: "image output", src: `data:image/jpeg;base64,${String(d["image/jpeg"]).replace(/\s/g, "")}` });
  if (d["text/html"]) return sanitised(Array.isArray(d["text/html"]) ? d["text/html"].join("") : d["text/html"]);
  if (d["application/json"]) return h("pre", { class: "nb-out", text: JSON.stringify(d["application/json"], null, 2) });
  const t = d["text/plain"]; const pre = h("pre", { class: "nb-out" }); ansi(Array.isArray(t) ? t.join("") : (t ?? ""), pre); return pre;
}

// A POST whose answer is an event stream: each `event`/`data` pair handed to `on[event]`.
async function postEvents(path, on) {
  const r = await fetch(path, { method: "POST", credentials: "same-origin", headers: { Accept: "text/event-stream", "X-CSRF-Token": csrfToken() || "" } });
  if (!r.ok) { const body = await r.json().catch(() => ({})); throw new APIError(r.status, body); }
  const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i); buf = buf.slice(i + 2);
      let ev = "message", data = "";
      for (const line of block.split("\n")) { if (line.startsWith("event: ")) ev = line.slice(7); else if (line.startsWith("data: ")) data += line.slice(6); }
      if (data && on[ev]) on[ev](JSON.parse(data));
    }
  }
}

export async function notebookView(path) {
  const p = state.project;
  const list = await api("GET", `/api/notebook?project_id=${p.id}`);
  const entry = list.items.find((n) => n.path === path);
  if (!entry) throw new Error(`No notebook ${path}`);
  const id = entry.id;
  let etag = null;
  const cellsEl = h("div", { class: "nb-cells" });
  const kernel = h("span", { class: "muted", role: "status", "aria-label": "Kernel state" });
  const showKernel = async () => { const k = await api("GET", `/api/notebook/${id}/kernel`); kernel.textContent = `kernel: ${k.state}${k.language ? ` (${k.language})` : ""}`; };
  async function load() {
    const r = await fetch(`/api/notebook/${id}`, { credentials: "same-origin" });
    etag = r.headers.get("ETag");
    const nb = await r.json();
    cellsEl.replaceChildren(...nb.cells.map(cellEl));
    showKernel().catch(() => {});
  }
  // A change sent with the ETag; a stale one reloads (someone else saved meanwhile).
  async function change(method, url, body) {
    const r = await fetch(url, { method, credentials: "same-origin", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() || "", ...(etag ? { "If-Match": etag } : {}) }, body: body ? JSON.stringify(body) : undefined });
    if (r.status === 412) { say("The notebook changed elsewhere; reloaded it.", true); await load(); return null; }
    const json = r.status === 204 ? {} : await r.json();
    if (!r.ok) throw new APIError(r.status, json);
    etag = r.headers.get("ETag") || etag;
    return json;
  }
  function cellEl(c) {
    const outputs = h("div", { class: "nb-outputs", "aria-live": "polite" }, ...(c.outputs || []).map(outputEl));
    const count = h("span", { class: "nb-count muted", text: c.cell_type === "code" ? `[${c.execution_count ?? " "}]` : "" });
    const src = h("textarea", { class: "code-input nb-src", rows: Math.max(2, c.source.split("\n").length), spellcheck: "false", "aria-label": `Cell ${c.id} source` });
    src.value = c.source;
    const rendered = c.cell_type === "markdown" ? h("div", { class: "nb-md" }, markdown(c.source)) : null;
    src.onchange = () => change("PATCH", `/api/notebook/${id}/cells/${c.id}`, { source: src.value }).then(() => { if (rendered) rendered.replaceChildren(markdown(src.value)); }).catch((e) => say(e.message, true));
    async function run() {
      if (src.value !== c.source) { await change("PATCH", `/api/notebook/${id}/cells/${c.id}`, { source: src.value }); c.source = src.value; }
      if (c.cell_type !== "code") { if (rendered) rendered.replaceChildren(markdown(src.value)); return; }
      outputs.replaceChildren(); count.textContent = "[*]"; kernel.textContent = "kernel: busy";
      try {
        await postEvents(`/api/notebook/run/${id}/${c.id}`, {
          "cell.started": (d) => { count.textContent = `[${d.execution_count ?? " "}]`; },
          stream: (d) => { const last = outputs.lastElementChild; if (last?.dataset.stream === d.name) ansi(d.text, last); else { const el = outputEl({ output_type: "stream", ...d }); el.dataset.stream = d.name; outputs.append(el); } },
          display_data: (d) => outputs.append(outputEl(d)),
          execute_result: (d) => outputs.append(outputEl(d)),
          error: (d) => outputs.append(outputEl({ output_type: "error", ...d })),
          "cell.completed": (d) => { outputs.dataset.status = d.status; },
        });
      } catch (e) { say(e.message, true); }
      // The outputs are saved into the file: take its new ETag.
      const r = await fetch(`/api/notebook/${id}`, { credentials: "same-origin" }); etag = r.headers.get("ETag"); showKernel().catch(() => {});
    }
    src.onkeydown = (e) => { if (e.key === "Enter" && e.shiftKey) { e.preventDefault(); run(); } };
    const remove = h("button", { type: "button", class: "secondary", "aria-label": `Remove cell ${c.id}`, onclick: async () => { await change("DELETE", `/api/notebook/${id}/cells/${c.id}`); await load(); } }, "Remove");
    return h("div", { class: `nb-cell ${c.cell_type}`, "data-cell": c.id },
      h("div", { class: "row" }, count, h("span", { class: "pill", text: c.cell_type }),
        h("button", { type: "button", "aria-label": `Run cell ${c.id}`, onclick: run }, "Run"), remove),
      rendered, src, outputs);
  }
  const add = (type) => h("button", { type: "button", class: "secondary", onclick: async () => { await change("POST", `/api/notebook/${id}/cells`, { cell_type: type, source: "" }); await load(); } }, `+ ${type}`);
  const control = (what) => h("button", { type: "button", class: "secondary", onclick: async () => { try { await api("POST", `/api/notebook/${id}/${what}`); await showKernel(); } catch (e) { say(e.message, true); } } }, what === "restart" ? "Restart kernel" : "Interrupt");
  await load();
  return { el: h("section", { class: "pad notebook" }, h("h1", { text: path }),
    h("div", { class: "row" }, kernel, control("interrupt"), control("restart")), cellsEl,
    h("div", { class: "row" }, add("code"), add("markdown"))), title: path.split("/").pop() };
}
