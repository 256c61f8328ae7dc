// One type: ids by keyset pages, a filter in the query language, the count, an aggregate.
import {api, el, fmtNumber, fmtTime, recordHref, root, showError, typeHref} from "./common.js";

const KEPT = ["where", "order_by", "limit", "aggregate"];

export async function renderType(main, type) {
  const params = new URLSearchParams(location.search);
  const field = (name, placeholder) => el("input", {
    name, id: `f-${name}`, value: params.get(name) || "", placeholder, autocomplete: "off"});
  const form = el("form", {className: "filter", id: "filter"},
    el("label", {for: "f-where"}, "where"), field("where", '{"level": {"$gte": 3}}'),
    el("label", {for: "f-order_by"}, "order_by"), field("order_by", "-score, @id"),
    el("label", {for: "f-limit"}, "limit"), field("limit", "50"),
    el("label", {for: "f-aggregate"}, "aggregate"), field("aggregate", "a path: score"),
    el("span"), el("div", {}, el("button", {type: "submit", id: "apply"}, "Apply"), " ",
      el("a", {href: typeHref(type)}, "clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of KEPT) {
      const value = form.elements[name].value.trim();
      if (value) next.set(name, value);
    }
    location.assign(typeHref(type, next));
  });
  main.append(
    el("p", {}, el("a", {href: `${root}/`}, "Overview"), " / "),
    el("h1", {}, type), form);

  let page;
  try {
    page = await api(`/api/types/${encodeURIComponent(type)}?${params}`);
  } catch (error) {
    showError(main, error);
    return;
  }
  main.append(el("p", {id: "count"}, `${fmtNumber(page.count)} record${page.count === 1 ? "" : "s"} match`));
  if (page.aggregate) {
    const a = page.aggregate;
    main.append(el("table", {id: "aggregate"},
      el("thead", {}, el("tr", {}, ...["path", "count", "sum", "avg", "min", "max"].map(
        (h) => el("th", {}, h)))),
      el("tbody", {}, el("tr", {}, el("td", {}, a.path),
        ...["count", "sum", "avg", "min", "max"].map((k) => el("td", {className: "num"}, fmtNumber(a[k])))))));
  }
  const rows = page.items.map((r) => el("tr", {},
    el("td", {}, el("a", {href: recordHref(type, r.id)}, r.id)),
    el("td", {className: "num"}, String(r.version)),
    el("td", {}, fmtTime(r.updated_at)),
    el("td", {}, fmtTime(r.created_at)),
    el("td", {}, r.expires_at ? fmtTime(r.expires_at) : "")));
  main.append(el("table", {id: "records"},
    el("thead", {}, el("tr", {}, ...["id", "version", "updated", "created", "expires"].map(
      (h) => el("th", {}, h)))),
    el("tbody", {}, ...rows)));
  const nav = el("p", {className: "bar"});
  if (params.get("after")) {
    const first = new URLSearchParams(params);
    first.delete("after");
    nav.append(el("a", {href: typeHref(type, first), id: "first-page"}, "« first page"));
  }
  if (page.next) {
    const next = new URLSearchParams(params);
    next.set("after", page.next);
    nav.append(el("a", {href: typeHref(type, next), id: "next-page"}, "next page »"));
  }
  main.append(nav);
}
