// The overview: health, writes per second (live), change feed, reminders, every type.
import {api, card, el, fmtBytes, fmtNumber, fmtTime, setText, typeHref} from "./common.js";
import {RateChart} from "./chart.js";

const POLL_MS = 1000;

export async function renderOverview(main) {
  const canvas = el("canvas", {className: "chart", id: "writes-chart", "data-points": "0"});
  const typesBody = el("tbody", {id: "types"});
  const error = el("p", {className: "error", id: "error", hidden: true});
  main.append(
    el("h1", {}, "Overview"),
    error,
    el("div", {className: "cards"},
      card("database (schema)", "target"),
      card("server", "server-version"), card("round trip", "latency"),
      card("database size", "database-size"), card("state table", "table-size"),
      card("connections (active)", "connections"), card("records", "records")),
    el("h2", {}, "Writes per second ", el("span", {id: "rate", className: "muted"}, "–")),
    canvas,
    el("h2", {}, "Change feed"),
    el("div", {className: "cards"},
      card("position", "feed-position"), card("last change", "feed-last"),
      card("lag: written, not yet numbered", "feed-pending"), card("since last change", "feed-age")),
    el("h2", {}, "Reminders"),
    el("div", {className: "cards"},
      card("stored", "reminders"), card("overdue", "reminders-overdue"),
      card("oldest overdue since", "reminders-oldest")),
    el("section", {id: "silos-section", hidden: true},
      el("h2", {}, "Ray silos"),
      el("p", {className: "error", id: "silos-error", hidden: true}),
      el("table", {},
        el("thead", {}, el("tr", {},
          ...["silo", "pid", "node", "alive", "activations", "calls", "reruns"].map(
            (name, i) => el("th", {className: i > 3 ? "num" : ""}, name)))),
        el("tbody", {id: "silos"}))),
    el("h2", {}, "Types ", el("span", {id: "types-note", className: "muted"})),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "type"), el("th", {className: "num"}, "records"))),
      typesBody));

  const chart = new RateChart(canvas);
  let previous = null;
  let shownTypes = "";

  async function poll() {
    try {
      const o = await api("/api/overview");
      error.hidden = true;
      const now = performance.now();
      setText("target", `${o.target} (${o.schema})`);
      setText("server-version", o.server_version);
      setText("latency", `${o.latency_ms.toFixed(2)} ms`);
      setText("database-size", fmtBytes(o.database_bytes));
      setText("table-size", `${fmtBytes(o.table_bytes)} + ${fmtBytes(o.index_bytes)} indexes`);
      setText("connections", `${o.connections} (${o.active_connections})`);
      const records = Object.values(o.types).reduce((a, b) => a + b, 0);
      setText("records", (o.types_estimated ? "~" : "") + fmtNumber(records));
      setText("feed-position", fmtNumber(o.last_position));
      setText("feed-last", fmtTime(o.last_change_at));
      setText("feed-pending", o.pending_changes > 10000 ? "> 10,000" : fmtNumber(o.pending_changes));
      setText("feed-age", o.last_change_at
        ? `${Math.max(0, (Date.now() - Date.parse(o.last_change_at)) / 1000).toFixed(1)} s` : "–");
      setText("reminders", fmtNumber(o.reminders));
      setText("reminders-overdue", fmtNumber(o.reminders_overdue));
      setText("reminders-oldest", fmtTime(o.oldest_overdue_reminder));
      if (o.silos) drawSilos(o.silos);
      if (previous) {
        const seconds = (now - previous.at) / 1000;
        const counter = o.last_position || previous.last_position ? "last_position" : "writes_total";
        const rate = Math.max(0, (o[counter] - previous.o[counter]) / seconds);
        chart.push(rate);
        setText("rate", `${rate.toFixed(1)}/s now`);
      }
      previous = {at: now, o, last_position: o.last_position};
      const listed = JSON.stringify([o.types, o.types_estimated]);
      if (listed !== shownTypes) {
        shownTypes = listed;
        drawTypes(typesBody, o.types, o.types_estimated);
      }
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
    setTimeout(poll, POLL_MS);
  }
  await poll();
}

function drawTypes(body, types, estimated) {
  setText("types-note", estimated
    ? "(~ counts are estimates from the planner's statistics)" : "(exact counts)");
  const rows = Object.entries(types).map(([type, count]) =>
    el("tr", {},
      el("td", {}, el("a", {href: typeHref(type)}, type)),
      el("td", {className: "num"}, (estimated ? "~" : "") + fmtNumber(count))));
  if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: 2, className: "muted"}, "no records")));
  body.replaceChildren(...rows);
}

// A Ray actor system's silos, when the application passed its status to create_app.
function drawSilos(silos) {
  document.getElementById("silos-section").hidden = false;
  const error = document.getElementById("silos-error");
  error.textContent = silos.error || "";
  error.hidden = !silos.error;
  const rows = silos.silos.map((s) =>
    el("tr", {className: s.alive ? "" : "error"},
      el("td", {}, String(s.index)), el("td", {}, s.pid === null ? "–" : String(s.pid)),
      el("td", {}, s.node_id || "–"), el("td", {}, s.alive ? "yes" : "no"),
      el("td", {className: "num"}, fmtNumber(s.activations)),
      el("td", {className: "num"}, fmtNumber(s.calls)),
      el("td", {className: "num"}, fmtNumber(s.reruns))));
  document.getElementById("silos").replaceChildren(...rows);
}
