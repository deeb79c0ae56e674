// A small Markdown renderer that builds DOM nodes, never HTML: headings, paragraphs, lists, fenced
// code, inline code, bold, italics and links. Raw HTML in the source stays visible text, and a link
// is made only for http(s) and relative URLs (javascript:, data: … stay text).
import { h } from "./dom.js";

export function markdown(src) {
  const out = document.createDocumentFragment();
  const lines = String(src).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*```(\S*)/.exec(line);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) body.push(lines[i]);
      i++;
      out.append(h("pre", { class: "md-code" }, h("code", { text: body.join("\n") })));
      continue;
    }
    const head = /^(#{1,6})\s+(.*)$/.exec(line);
    if (head) { out.append(inline(h(`h${Math.min(head[1].length + 2, 6)}`), head[2])); i++; continue; }
    if (/^\s*([-*+]|\d+\.)\s+/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const list = h(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+\.)\s+/.test(lines[i])) {
        list.append(inline(h("li"), lines[i].replace(/^\s*([-*+]|\d+\.)\s+/, "")));
        i++;
      }
      out.append(list);
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^\s*```|^#{1,6}\s|^\s*([-*+]|\d+\.)\s+/.test(lines[i])) para.push(lines[i++]);
    out.append(inline(h("p"), para.join("\n")));
  }
  return out;
}

// `_x_` only between non-word characters, so names like window._x_ stay as they are.
const INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|(?<!\w)_([^_\s][^_]*)_(?!\w)|\[([^\]]+)\]\(([^)\s]+)\)/g;

function inline(el, text) {
  let last = 0, m;
  INLINE.lastIndex = 0;
  while ((m = INLINE.exec(text))) {
    el.append(text.slice(last, m.index));
    if (m[1] !== undefined) el.append(h("code", { text: m[1] }));
    else if (m[2] !== undefined) el.append(h("strong", { text: m[2] }));
    else if (m[3] !== undefined || m[4] !== undefined) el.append(h("em", { text: m[3] ?? m[4] }));
    else {
      const url = m[6];
      const safe = /^(https?:\/\/|\/|\.\/|#)/i.test(url);
      el.append(safe ? h("a", { href: url, rel: "noopener noreferrer", target: "_blank", text: m[5] }) : `[${m[5]}](${url})`);
    }
    last = INLINE.lastIndex;
  }
  el.append(text.slice(last));
  return el;
}
