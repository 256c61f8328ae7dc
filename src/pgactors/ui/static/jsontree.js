// A JSON value as a collapsible tree (<details>), built with textContent only.
import {el} from "./common.js";

function leaf(value) {
  if (value === null) return el("span", {className: "literal"}, "null");
  switch (typeof value) {
    case "string": return el("span", {className: "string"}, JSON.stringify(value));
    case "number": return el("span", {className: "number"}, String(value));
    case "boolean": return el("span", {className: "literal"}, String(value));
    default: return el("span", {}, String(value));
  }
}

function label(key) {
  return key === undefined ? [] : [el("span", {className: "key"}, JSON.stringify(key)), ": "];
}

export function jsonTree(value, key, depth = 0) {
  const isArray = Array.isArray(value);
  if (value === null || typeof value !== "object") {
    return el("div", {className: "entry"}, ...label(key), leaf(value));
  }
  const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
  const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
  if (!entries.length) return el("div", {className: "entry"}, ...label(key), open + close);
  const size = `${entries.length} ${isArray ? "item" : "key"}${entries.length === 1 ? "" : "s"}`;
  const node = el("details", {open: depth < 3},
    el("summary", {}, ...label(key), open, el("span", {className: "muted"}, ` ${size} `)));
  for (const [k, v] of entries) node.append(jsonTree(v, isArray ? undefined : k, depth + 1));
  node.append(el("div", {}, close));
  return node;
}
