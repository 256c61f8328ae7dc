// One record: its JSON as a tree, its version and times, live as it changes; edits
// (compare-and-set on the version shown) and deletes when the dashboard allows writes.
import {ApiError, api, clear, el, fmtBytes, fmtTime, root, typeHref} from "./common.js";
import {jsonTree} from "./jsontree.js";

export async function renderRecord(main, type, id) {
  const path = `/api/types/${encodeURIComponent(type)}/${encodeURIComponent(id)}`;
  const banner = el("p", {className: "banner", id: "banner", hidden: true});
  const meta = el("table", {id: "meta"});
  const body = el("div", {id: "body"});
  const actions = el("div", {className: "bar", id: "actions"});
  const message = el("p", {id: "message", role: "alert"});
  main.append(
    el("p", {}, el("a", {href: `${root}/`}, "Overview"), " / ",
      el("a", {href: typeHref(type)}, type), " /"),
    el("h1", {id: "record-id"}, id), banner, meta, actions, message, body);

  let shown = null;   // the record on the page
  let editing = false;
  let confirming = false;
  let gone = false;

  function say(text, kind = "error") {
    message.className = kind;
    message.textContent = text;
  }

  function draw(record, force = false) {
    // Read again but unchanged: leave the page (and what the user is doing) alone.
    if (!force && shown && record.version === shown.version && record.updated_at === shown.updated_at) return;
    shown = record;
    const rows = [["version", String(record.version)], ["created", fmtTime(record.created_at)],
      ["updated", fmtTime(record.updated_at)], ["expires", record.expires_at ? fmtTime(record.expires_at) : "never"]];
    if (record.binary) {
      rows.push(["manifest", record.binary.manifest], ["size", `${fmtBytes(record.binary.bytes)} (${record.binary.bytes} bytes)`]);
    }
    meta.replaceChildren(...rows.map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {id: `meta-${k}`}, v))));
    clear(body).append(record.binary
      ? el("p", {className: "muted"}, "A binary state: its bytes are not shown.")
      : el("div", {className: "json", id: "json"}, jsonTree(record.data)));
    drawActions();
  }

  function drawActions() {
    if (confirming) return;
    actions.replaceChildren();
    if (!shown || !shown.writable || gone) return;
    if (!shown.binary) actions.append(el("button", {id: "edit", on: {click: startEdit}}, "Edit"));
    actions.append(el("button", {id: "delete", on: {click: askDelete}}, "Delete"));
  }

  function startEdit() {
    editing = true;
    const version = shown.version;
    const editor = el("textarea", {id: "editor", spellcheck: "false"});
    editor.value = JSON.stringify(shown.data, null, 2);
    const save = el("button", {id: "save", on: {click: async () => {
      let data;
      try { data = JSON.parse(editor.value); } catch (e) { say(`not JSON: ${e.message}`); return; }
      try {
        const saved = await api(path, {method: "PUT", body: JSON.stringify({data, expected_version: version})});
        editing = false;
        banner.hidden = true;
        say(`saved: version ${saved.version}`, "ok");
        draw(saved, true);
      } catch (error) {
        if (error instanceof ApiError && error.status === 409) {
          const now = error.body.actual;
          say(`Conflict: you edited version ${version}, but the record is ` +
            (now ? `now at version ${now}` : "gone") + ". Nothing was saved: reload to edit the current data.");
        } else {
          say(error.message);
        }
      }
    }}}, "Save");
    const cancel = el("button", {id: "cancel", on: {click: () => {
      editing = false;
      say("", "muted");
      draw(shown, true);
      reload();
    }}}, "Cancel");
    actions.replaceChildren(save, cancel);
    clear(body).append(editor);
  }

  function askDelete() {
    confirming = true;
    const version = shown.version;
    const yes = el("button", {className: "danger", id: "confirm-delete", on: {click: async () => {
      confirming = false;
      try {
        await api(`${path}?expected_version=${version}`, {method: "DELETE"});
        gone = true;
        say("Deleted.", "ok");
        actions.replaceChildren(el("a", {href: typeHref(type)}, `back to ${type}`));
        clear(body);
      } catch (error) {
        if (error instanceof ApiError && error.status === 409) {
          say(`Conflict: the record changed since version ${version}; nothing was deleted.`);
          reload();
        } else {
          say(error.message);
        }
      }
    }}}, "Yes, delete");
    const no = el("button", {id: "cancel-delete", on: {click: () => {
      confirming = false;
      drawActions();
    }}}, "Cancel");
    actions.replaceChildren(el("span", {}, `Delete ${type}/${id} at version ${version}?`), yes, no);
  }

  async function reload() {
    try {
      draw(await api(path));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        gone = true;
        shown = null;
        meta.replaceChildren();
        clear(body);
        actions.replaceChildren();
        say("No such record.");
      } else {
        say(error.message);
      }
    }
  }

  const events = new EventSource(`${root}/api/changes?type=${encodeURIComponent(type)}&id=${encodeURIComponent(id)}`);
  // Read again once subscribed: a change between the first read and then is not missed.
  events.addEventListener("ready", () => { if (!editing) reload(); });
  await reload();
  events.addEventListener("message", (event) => {
    const change = JSON.parse(event.data);
    if (shown && change.version <= shown.version && change.op === "save") return;
    if (editing) {
      banner.textContent = change.op === "delete"
        ? `Deleted on the server (position ${change.position}).`
        : `Changed on the server: now version ${change.version}. Saving your edit will conflict.`;
      banner.hidden = false;
      return;
    }
    if (change.op === "delete") {
      gone = true;
      banner.textContent = `Deleted (position ${change.position}).`;
      banner.hidden = false;
      actions.replaceChildren();
      return;
    }
    gone = false;
    banner.hidden = true;
    reload();
  });
  events.addEventListener("failure", (event) => say(JSON.parse(event.data).error));
}
