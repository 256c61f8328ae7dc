// Draws the page the address names: /, /changes, /types/{type}, /types/{type}/{id}.
import {root, showError} from "./common.js";
import {renderOverview} from "./overview.js";
import {renderType} from "./type.js";
import {renderRecord} from "./record.js";
import {renderChanges} from "./changes.js";

const main = document.getElementById("main");
const path = location.pathname.slice(root.length) || "/";
const parts = path.split("/").slice(1);

async function route() {
  main.replaceChildren();
  if (path === "/") return renderOverview(main);
  if (path === "/changes") return renderChanges(main);
  if (parts[0] === "types" && parts.length === 2) return renderType(main, decodeURIComponent(parts[1]));
  if (parts[0] === "types" && parts.length > 2) {
    return renderRecord(main, decodeURIComponent(parts[1]), decodeURIComponent(parts.slice(2).join("/")));
  }
  showError(main, new Error(`no page at ${path}`));
}

route().catch((error) => showError(main, error));
