// The live change feed: server-sent events from store.changes, drawn at most once per
// frame (requestAnimationFrame), newest first, keeping the last MAX_ROWS rows.
import {el, fmtNumber, recordHref, root, setText} from "./common.js";

const MAX_ROWS = 500;

export async function renderChanges(main) {
  const params = new URLSearchParams(location.search);
  const typeInput = el("input", {id: "type-filter", placeholder: "every type (or: a, b)",
    value: params.getAll("type").join(", "), autocomplete: "off"});
  const sinceInput = el("input", {id: "since", placeholder: "position", value: params.get("since") || "",
    autocomplete: "off", size: 10});
  const tbody = el("tbody", {id: "feed"});
  const error = el("p", {className: "error", id: "error", hidden: true});
  const pauseButton = el("button", {id: "pause"}, "Pause");
  const resumeButton = el("button", {id: "resume", disabled: true}, "Resume");
  main.append(
    el("h1", {}, "Changes"),
    el("div", {className: "bar"},
      el("label", {for: "type-filter"}, "type "), typeInput,
      el("button", {id: "apply-filter"}, "Apply"),
      pauseButton, resumeButton,
      el("label", {for: "since"}, "resume after position "), sinceInput,
      el("button", {id: "resume-from"}, "Go")),
    el("p", {className: "muted"},
      el("span", {id: "status"}, "connecting…"), " · received ", el("span", {id: "received"}, "0"),
      " · position ", el("span", {id: "position"}, "–")),
    error,
    el("table", {},
      el("thead", {}, el("tr", {}, ...["position", "at", "op", "type", "id", "version"].map(
        (h) => el("th", {}, h)))),
      tbody));

  let source = null;
  let pending = [];
  let frame = 0;
  let received = 0;
  let position = params.get("since") ? Number(params.get("since")) : null;

  function types() {
    return typeInput.value.split(",").map((t) => t.trim()).filter(Boolean);
  }

  function address(since) {
    const query = new URLSearchParams();
    for (const t of types()) query.append("type", t);
    if (since !== null && since !== undefined && since !== "") query.set("since", String(since));
    return query;
  }

  function flush() {
    frame = 0;
    const batch = pending.length > MAX_ROWS ? pending.slice(-MAX_ROWS) : pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) {
      const c = batch[i];
      fragment.append(el("tr", {className: c.op},
        el("td", {className: "num"}, String(c.position)), el("td", {}, c.at),
        el("td", {}, c.op), el("td", {}, c.type),
        el("td", {}, c.op === "delete" ? c.id : el("a", {href: recordHref(c.type, c.id)}, c.id)),
        el("td", {className: "num"}, String(c.version))));
    }
    tbody.prepend(fragment);
    while (tbody.childElementCount > MAX_ROWS) tbody.lastElementChild.remove();
    setText("received", fmtNumber(received));
    setText("position", position === null ? "–" : String(position));
  }

  function open(since) {
    close();
    error.hidden = true;
    setText("status", "connecting…");
    source = new EventSource(`${root}/api/changes?${address(since)}`);
    source.addEventListener("ready", (event) => {
      const ready = JSON.parse(event.data);
      if (position === null && ready.position !== null) position = ready.position;
      setText("status", "live");
      setText("position", position === null ? "–" : String(position));
    });
    source.addEventListener("message", (event) => {
      const change = JSON.parse(event.data);
      received++;
      position = change.position;
      pending.push(change);
      if (pending.length > MAX_ROWS) pending.splice(0, pending.length - MAX_ROWS);
      if (!frame) frame = requestAnimationFrame(flush);
    });
    source.addEventListener("failure", (event) => {
      error.textContent = JSON.parse(event.data).error;
      error.hidden = false;
      close();
      setText("status", "stopped");
    });
    source.addEventListener("error", () => {
      if (source && source.readyState !== EventSource.CLOSED) setText("status", "reconnecting…");
    });
    pauseButton.disabled = false;
    resumeButton.disabled = true;
  }

  function close() {
    if (source) source.close();
    source = null;
  }

  function pause() {
    close();
    if (frame) { cancelAnimationFrame(frame); flush(); }
    setText("status", `paused after position ${position === null ? "–" : position}`);
    sinceInput.value = position === null ? "" : String(position);
    history.replaceState(null, "", `${root}/changes?${address(position)}`);
    pauseButton.disabled = true;
    resumeButton.disabled = false;
  }

  pauseButton.addEventListener("click", pause);
  resumeButton.addEventListener("click", () => open(position));
  main.querySelector("#apply-filter").addEventListener("click", () => {
    history.replaceState(null, "", `${root}/changes?${address(null)}`);
    tbody.replaceChildren();
    position = null;
    open(null);
  });
  main.querySelector("#resume-from").addEventListener("click", () => {
    const value = sinceInput.value.trim();
    position = value === "" ? null : Number(value);
    tbody.replaceChildren();
    history.replaceState(null, "", `${root}/changes?${address(position)}`);
    open(position);
  });
  open(position);
}
