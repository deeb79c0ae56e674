// Building DOM without HTML strings: text always goes in as text, so file contents, model output and
// names from the server can never become markup.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

// SGR colours (30–37, 90–97, bold) as spans; every other escape sequence is dropped.
const COLORS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
export function ansi(text, into, state = { fg: null, bold: false }) {
  const re = /\x1b\[([0-9;]*)m|\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r(?!\n)/g;
  let last = 0, m;
  const put = (s) => {
    if (!s) return;
    if (!state.fg && !state.bold) { into.append(s); return; }
    into.append(h("span", { class: [state.fg ? `ansi-${state.fg}` : "", state.bold ? "ansi-bold" : ""].join(" ").trim(), text: s }));
  };
  while ((m = re.exec(text))) {
    put(text.slice(last, m.index));
    last = re.lastIndex;
    if (m[1] === undefined) continue;
    for (const code of (m[1] || "0").split(";").map(Number)) {
      if (code === 0) { state.fg = null; state.bold = false; }
      else if (code === 1) state.bold = true;
      else if (code === 22) state.bold = false;
      else if (code === 39) state.fg = null;
      else if (code >= 30 && code <= 37) state.fg = COLORS[code - 30];
      else if (code >= 90 && code <= 97) state.fg = "bright-" + COLORS[code - 90];
    }
  }
  put(text.slice(last));
  return state;
}
