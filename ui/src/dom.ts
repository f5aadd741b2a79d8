// Building the page from data. Every string becomes a text node or a DOM property, never
// markup, so a run name or tag value of "<script>…" shows as those characters.

export type Child = Node | string | number | null | undefined | false | Child[];

export interface Props {
  class?: string;
  /** data-* attributes (values are stringified). */
  data?: Record<string, string | number | boolean | null | undefined>;
  /** Other attributes, set with setAttribute (values are text, not markup). */
  attrs?: Record<string, string | number | boolean | null | undefined>;
  on?: { [K in keyof HTMLElementEventMap]?: (e: HTMLElementEventMap[K]) => void };
  [property: string]: unknown;
}

// Control characters (ANSI escapes start with one), bidirectional overrides and invisible
// format characters in user text are shown as visible escapes (\x1b, \u202e), never acted on:
// a name cannot reorder, hide or spoof the text around it. Tab, newline and CR stay (log output).
const INVISIBLE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/** ``s`` with every control and bidi-control character replaced by its visible escape. */
export function inert(s: string): string {
  return s.replace(INVISIBLE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, ...child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(inert(String(child))));
  }
}

/** ``h("a", {href: "/x", class: "link"}, "text")``: an element with properties and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined) continue;
      if (key === "class") el.className = String(value);
      else if (key === "data") {
        for (const [k, v] of Object.entries(value as NonNullable<Props["data"]>)) {
          if (v !== null && v !== undefined) el.dataset[k] = String(v);
        }
      } else if (key === "attrs") {
        for (const [k, v] of Object.entries(value as NonNullable<Props["attrs"]>)) {
          if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : String(v));
        }
      } else if (key === "on") {
        for (const [type, fn] of Object.entries(value as Record<string, EventListener>)) el.addEventListener(type, fn);
      } else {
        (el as unknown as Record<string, unknown>)[key] = value;
      }
    }
  }
  append(el, ...children);
  return el;
}

/** Replace every child of ``el``. */
export function setChildren(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, ...children);
}

/** A link handled by the client-side router (see main.ts). */
export function link(href: string, ...children: Child[]): HTMLAnchorElement {
  return h("a", { href, data: { nav: "" } }, ...children);
}

export function section(title: Child, id: string, ...children: Child[]): HTMLElement {
  return h("section", { class: "card", id }, h("h2", null, title), ...children);
}

export function message(text: string, kind: "info" | "error" = "info"): HTMLElement {
  return h("p", { class: `msg msg-${kind}` }, text);
}

export function statusBadge(status: string): HTMLElement {
  return h("span", { class: `badge status-${status.replace(/[^a-z]/g, "")}`, data: { status } }, status);
}
