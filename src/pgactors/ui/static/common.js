// Shared helpers. Every piece of stored data reaches the page through textContent or
// an attribute set by the DOM API: never through innerHTML.

export const root = document.documentElement.dataset.root || "";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// el("a", {href: "/x", className: "c", on: {click: f}}, "text", childNode, ...)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "on") {
      for (const [name, handler] of Object.entries(value)) node.addEventListener(name, handler);
    } else if (key === "className" || key === "textContent" || key === "value" ||
               key === "hidden" || key === "type" || key === "disabled" || key === "open") {
      node[key] = value;
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export async function api(path, options = {}) {
  const response = await fetch(root + path, {
    credentials: "same-origin",
    headers: {"Accept": "application/json", ...(options.body ? {"Content-Type": "application/json"} : {})},
    ...options,
  });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function typeHref(type, params) {
  const query = params && params.toString() ? `?${params}` : "";
  return `${root}/types/${encodeURIComponent(type)}${query}`;
}

export function recordHref(type, id) {
  return `${root}/types/${encodeURIComponent(type)}/${encodeURIComponent(id)}`;
}

export function fmtNumber(n) {
  if (n === null || n === undefined) return "–";
  return typeof n === "number" ? n.toLocaleString("en-US", {maximumFractionDigits: 3}) : String(n);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").replace("Z", " UTC");
}

export function card(label, id, value = "–") {
  return el("div", {className: "card"},
    el("div", {className: "label"}, label),
    el("div", {className: "value", id}, value));
}

export function setText(id, value) {
  const node = document.getElementById(id);
  if (node && node.textContent !== String(value)) node.textContent = String(value);
}

export function showError(container, error) {
  container.append(el("p", {className: "error", role: "alert"}, error.message || String(error)));
}
