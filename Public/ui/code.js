// Code: the file viewer (line numbers, highlighting, line-range links, large files a slice at a
// time), search results grouped by file, and quick open.
import { api } from "./api.js";
import { shareButton } from "./collab.js";
import { h, $, formatBytes } from "./dom.js";
import { state, go, base, say, currentKey } from "./main.js";

const CHUNK = 1500;          // lines fetched per slice
const HIGHLIGHT_MAX = 200000; // characters of a slice highlighted; beyond that plain text
const LINE = 20;             // px, the code's line height (workspace.css)

let vendor = null;
export async function vendorFile(name) {
  if (!vendor) vendor = await (await fetch("/vendor/manifest.json")).json();
  return "/vendor/" + vendor[name];
}
let hljsLoading = null;
function loadHighlighter() {
  if (!hljsLoading) hljsLoading = (async () => {
    document.head.append(h("link", { rel: "stylesheet", href: await vendorFile("highlight.css") }));
    await new Promise(async (ok, fail) => document.head.append(h("script", { src: await vendorFile("highlight.js"), onload: ok, onerror: fail })));
    return window.hljs;
  })().catch(() => null);
  return hljsLoading;
}

const LANG = { js: "javascript", mjs: "javascript", ts: "typescript", py: "python", rb: "ruby", rs: "rust", go: "go", swift: "swift",
  c: "c", h: "c", cc: "cpp", cpp: "cpp", hpp: "cpp", java: "java", kt: "kotlin", sh: "bash", bash: "bash", json: "json",
  yml: "yaml", yaml: "yaml", md: "markdown", html: "xml", xml: "xml", css: "css", sql: "sql", toml: "ini", ini: "ini", php: "php", cs: "cs" };

// #L10 or #L10-L20 → [10, 20]
export function parseLines(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash || "");
  if (!m) return null;
  const a = +m[1], b = m[2] ? +m[2] : a;
  return [Math.min(a, b), Math.max(a, b)];
}

function markLines(view, range) {
  view.marks.replaceChildren();
  if (!range) return;
  view.marks.append(h("div", { class: "line-mark" }));
  const band = view.marks.firstChild;
  band.style.top = `${(range[0] - 1) * LINE}px`;
  band.style.height = `${(range[1] - range[0] + 1) * LINE}px`;
}

export async function fileView(path) {
  performance.mark("kiln:file-requested");
  const id = state.project.id;
  const url = (extra) => `/api/project/file?project_id=${id}&path=${encodeURIComponent(path)}${extra}`;
  const body = h("div", { class: "code-body" });
  const marks = h("div", { class: "marks", "aria-hidden": "true" });
  const code = h("div", { class: "code", tabindex: "0", "aria-label": `Contents of ${path}` }, marks, body);
  const info = h("span", { class: "muted" });
  const el = h("section", { class: "file-view" }, h("div", { class: "file-head" }, h("strong", { text: path }), " ", info,
    h("a", { href: url("&raw=1"), download: path.split("/").pop(), class: "small" }, "raw"), " ",
    shareButton({ type: "file", id, path }, "Share…")), code);
  const view = { el, title: path.split("/").pop(), marks, total: null, loaded: 0, loading: false };
  const ext = path.includes(".") ? path.split(".").pop().toLowerCase() : "";
  const language = LANG[ext] || ext;
  const hl = loadHighlighter();

  async function loadSlice() {
    if (view.loading || (view.total !== null && view.loaded >= view.total)) return;
    view.loading = true;
    const start = view.loaded + 1;
    const r = await api("GET", url(`&start_line=${start}&end_line=${start + CHUNK - 1}`));
    if (r.binary) {
      info.textContent = `binary, ${formatBytes(r.size)}`;
      body.append(h("p", { class: "pad muted", text: "A binary file: use the raw link to download it." }));
      view.total = 0; view.loading = false; return;
    }
    view.total = r.total_lines ?? 0;
    info.textContent = `${formatBytes(r.size)} · ${view.total} lines`;
    let text = r.content ?? "";
    if (text.endsWith("\n")) text = text.slice(0, -1);
    const n = (r.end_line ?? start) - start + 1;
    const gutter = h("pre", { class: "gutter" });
    gutter.textContent = Array.from({ length: n }, (_, i) => start + i).join("\n");
    const pre = h("pre", { class: "src" }, h("code", {}));
    const hljs = text.length <= HIGHLIGHT_MAX ? await hl : null;
    if (hljs && hljs.getLanguage(language)) {
      // highlight.js escapes the text it is given; its output holds only its own spans.
      pre.firstChild.innerHTML = hljs.highlight(language, text, true).value;
      pre.firstChild.className = "hljs";
    } else pre.firstChild.textContent = text;
    body.append(h("div", { class: "chunk" }, gutter, pre));
    if (start === 1) requestAnimationFrame(() => performance.mark("kiln:file-first-screen"));
    view.loaded = r.end_line ?? view.total;
    view.loading = false;
  }

  // Clicking a line number marks it; shift-click extends the range. The URL is the link to share.
  code.addEventListener("click", (e) => {
    if (!e.target.classList.contains("gutter")) return;
    const rect = e.target.getBoundingClientRect();
    const first = +e.target.textContent.split("\n", 1)[0];
    const line = first + Math.floor((e.clientY - rect.top) / LINE);
    const cur = parseLines(location.hash);
    const range = e.shiftKey && cur ? [Math.min(cur[0], line), Math.max(cur[0], line)] : [line, line];
    history.replaceState(null, "", `#L${range[0]}${range[1] !== range[0] ? "-L" + range[1] : ""}`);
    markLines(view, range);
  });
  // More lines as the end comes into view.
  const sentinel = h("div", { class: "sentinel" });
  el.append(sentinel);
  new IntersectionObserver((entries) => { if (entries.some((x) => x.isIntersecting)) loadSlice().catch((e) => say(e.message, true)); }, { root: null, rootMargin: "800px" }).observe(sentinel);

  view.onHash = async () => {
    const range = parseLines(location.hash);
    if (!range) return markLines(view, null);
    while (view.total === null || (view.loaded < range[1] && view.loaded < view.total)) { await loadSlice(); if (view.total === 0) break; }
    markLines(view, range);
    requestAnimationFrame(() => { code.scrollTop = Math.max(0, (range[0] - 5) * LINE); });
  };
  await loadSlice();
  view.onShow = () => view.onHash();
  return view;
}

export function searchView() {
  const q = new URLSearchParams(location.search);
  const results = h("div", { class: "results", role: "region", "aria-label": "Search results" });
  const summary = h("p", { class: "muted", role: "status" });
  const form = h("form", { class: "search-form", role: "search" },
    h("input", { name: "q", placeholder: "Search the project", "aria-label": "Search text", value: q.get("q") || "", required: true }),
    h("input", { name: "path", placeholder: "path glob, e.g. Sources/**", "aria-label": "Path glob", value: q.get("path") || "" }),
    h("label", { class: "small" }, h("input", { type: "checkbox", name: "regex", checked: q.get("regex") === "1" }), " regex"),
    h("label", { class: "small" }, h("input", { type: "checkbox", name: "case", checked: q.get("case") === "1" }), " case"),
    h("button", { type: "submit" }, "Search"));
  const view = { el: h("section", { class: "pad search-view" }, form, summary, results), title: "Search" };
  async function run() {
    const f = new FormData(form);
    const params = new URLSearchParams({ q: f.get("q") });
    if (f.get("path")) params.set("path", f.get("path"));
    if (f.get("regex")) params.set("regex", "1");
    if (f.get("case")) params.set("case", "1");
    history.replaceState(null, "", `${base()}/search?${params}`);
    summary.textContent = "Searching…";
    try {
      const r = await api("GET", `/api/project/search?project_id=${state.project.id}&limit=200&${params}`);
      performance.mark("kiln:search-response");
      const groups = new Map();
      for (const m of r.items) { if (!groups.has(m.path)) groups.set(m.path, []); groups.get(m.path).push(m); }
      summary.textContent = `${r.total} match${r.total === 1 ? "" : "es"} in ${groups.size} file${groups.size === 1 ? "" : "s"}${r.next_cursor ? " (first 200 shown)" : ""}`;
      results.replaceChildren(...[...groups].map(([path, ms]) => h("div", { class: "group" }, h("h3", { text: path }),
        h("ul", {}, ms.map((m) => {
          const href = `${base()}/file/${path.split("/").map(encodeURIComponent).join("/")}#L${m.line}`;
          return h("li", {}, h("a", { href, class: "hit", onclick: (e) => { e.preventDefault(); go(href); } },
            h("span", { class: "ln", text: String(m.line) }), h("code", { text: m.text })));
        })))));
      // Painted: the frame after the results are in the DOM (the bench reads these marks).
      requestAnimationFrame(() => setTimeout(() => performance.mark("kiln:search-painted"), 0));
    } catch (e) { summary.textContent = e.message; summary.className = "bad"; }
  }
  form.onsubmit = (e) => { e.preventDefault(); run(); };
  view.onShow = () => { const i = form.querySelector("input"); i.focus(); };
  if (q.get("q")) run();
  return view;
}

export function quickOpen() {
  const dlg = $("#dlg-quick"), input = $("#quick-input"), list = $("#quick-list");
  let items = [], sel = 0, timer = null, seq = 0;
  const render = () => list.replaceChildren(...items.map((it, i) => {
    const li = h("li", { role: "option", "aria-selected": String(i === sel), class: i === sel ? "sel" : "" });
    li.onclick = () => open(i);
    if (it.symbol) {  // go to symbol: name, kind, where
      li.append(h("b", { text: it.symbol.name }), " ", h("span", { class: "muted", text: `${it.symbol.kind} · ${it.path}:${it.symbol.line}` }));
      return li;
    }
    // Matched characters in bold: built from text pieces, never markup.
    const bytes = new TextEncoder().encode(it.path), marks = new Set(it.positions);
    let run = [], bold = false;
    const flush = () => { if (run.length) li.append(bold ? h("b", { text: new TextDecoder().decode(new Uint8Array(run)) }) : new TextDecoder().decode(new Uint8Array(run))); run = []; };
    bytes.forEach((b, k) => { if (marks.has(k) !== bold) { flush(); bold = marks.has(k); } run.push(b); });
    flush();
    return li;
  }));
  const open = (i) => {
    const it = items[i];
    if (!it) return;
    dlg.close();
    go(`${base()}/file/${it.path.split("/").map(encodeURIComponent).join("/")}${it.symbol ? "#L" + it.symbol.line : ""}`);
  };
  // "@name" goes to a symbol (GET /api/project/symbols); anything else is a path (GET /api/project/paths).
  const search = async () => {
    const mine = ++seq;
    const text = input.value;
    if (text.startsWith("@")) {
      const r = text.length > 1 ? await api("GET", `/api/project/symbols?project_id=${state.project.id}&limit=30&q=${encodeURIComponent(text.slice(1))}`) : { items: [] };
      if (mine !== seq) return;
      items = r.items.map((s) => ({ path: s.path, positions: [], symbol: s }));
    } else {
      const r = await api("GET", `/api/project/paths?project_id=${state.project.id}&limit=30&q=${encodeURIComponent(text)}`);
      if (mine !== seq) return;
      items = r.items;
    }
    sel = 0; render();
  };
  input.oninput = () => { clearTimeout(timer); timer = setTimeout(search, 60); };
  input.onkeydown = (e) => {
    if (e.key === "ArrowDown") { sel = Math.min(sel + 1, items.length - 1); render(); e.preventDefault(); }
    else if (e.key === "ArrowUp") { sel = Math.max(sel - 1, 0); render(); e.preventDefault(); }
    else if (e.key === "Enter") { e.preventDefault(); open(sel); }
  };
  input.value = "";
  dlg.showModal();
  input.focus();
  search();
}
