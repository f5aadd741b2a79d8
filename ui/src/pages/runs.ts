// "/experiments/{name}": the runs table. Filtering, sorting and paging happen in the API
// (GET /api/experiments/{name}/runs), so 10,000 runs cost one page of rows; the page's
// state lives in the URL's query, so a filtered, sorted view can be shared and reloaded.
import { api, enc, STATUSES, toFloat, type Run, type Summary } from "../api";
import { h, link, message, setChildren, statusBadge, type Child } from "../dom";
import { elapsed, fmtDuration, fmtTime, fmtValue, runLabel } from "../format";
import type { PageContext } from "../main";
import { navigate } from "../nav";

const OPERATORS = ["<", "<=", ">", ">=", "=", "!="];
const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_COLUMNS = 8;

interface State {
  status: string[];
  tag: string[];
  metric: string[];
  col: string[];
  orderBy: string;
  order: "asc" | "desc" | "";
  offset: number;
  limit: number;
  top: boolean;
}

function parse(p: URLSearchParams): State {
  const limit = Number(p.get("limit"));
  return {
    status: p.getAll("status"),
    tag: p.getAll("tag"),
    metric: p.getAll("metric"),
    col: p.getAll("col"),
    orderBy: p.get("order_by") || "started_at",
    order: (p.get("order") as State["order"]) || "",
    offset: Math.max(0, Number(p.get("offset")) || 0),
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
    top: p.get("top") === "1",
  };
}

function toQuery(s: State): URLSearchParams {
  const p = new URLSearchParams();
  s.status.forEach((v) => p.append("status", v));
  s.tag.forEach((v) => p.append("tag", v));
  s.metric.forEach((v) => p.append("metric", v));
  s.col.forEach((v) => p.append("col", v));
  if (s.orderBy !== "started_at") p.set("order_by", s.orderBy);
  if (s.order) p.set("order", s.order);
  if (s.offset) p.set("offset", String(s.offset));
  if (s.limit !== 50) p.set("limit", String(s.limit));
  if (s.top) p.set("top", "1");
  return p;
}

function effectiveOrder(s: State): "asc" | "desc" {
  return s.order || (s.orderBy === "started_at" ? "desc" : "asc");
}

export async function runsPage({ root, signal, params, crumbs }: PageContext, experiment: string): Promise<void> {
  document.title = `${experiment} · runstream`;
  crumbs(link("/", "Experiments"), experiment);
  const state = parse(params);
  const known = new Set<string>(state.col);
  const kinds = new Map<string, Summary["kind"]>();
  const selected = new Map<string, string>();

  const total = h("span", { class: "muted", id: "runs-total" });
  const tableBox = h("div", { class: "table-scroll" }, message("Loading runs…"));
  const pager = h("div", { class: "pager" });
  const chips = h("div", { class: "chips", id: "active-filters" });
  const columnsBox = h("div", { class: "columns-picker" });
  const metricNames = h("datalist", { id: "metric-names" });
  const compareBar = h("div", { class: "compare-bar", hidden: true });

  const update = (change: Partial<State>, resetPage = true) => {
    Object.assign(state, change, resetPage && !("offset" in change) ? { offset: 0 } : {});
    const qs = toQuery(state).toString();
    history.pushState(null, "", `/experiments/${enc(experiment)}${qs ? `?${qs}` : ""}`);
    void load();
  };

  // ---- filter bar
  const statusBoxes = STATUSES.map((s) =>
    h("label", { class: "check" },
      h("input", {
        type: "checkbox",
        checked: state.status.includes(s),
        data: { status: s },
        on: { change: (e) => update({ status: toggle(state.status, s, (e.target as HTMLInputElement).checked) }) },
      }),
      s),
  );
  const tagInput = h("input", { placeholder: "key or key:value", attrs: { "aria-label": "tag filter" }, size: 16 });
  const metricName = h("input", { placeholder: "metric", attrs: { list: "metric-names", "aria-label": "metric name" }, size: 10 });
  const metricOp = h("select", { attrs: { "aria-label": "operator" } }, OPERATORS.map((o) => h("option", { value: o }, o)));
  const metricValue = h("input", { type: "number", step: "any", placeholder: "value", attrs: { "aria-label": "threshold" }, size: 8 });
  const addTag = (e: Event) => {
    e.preventDefault();
    const v = tagInput.value.trim();
    if (v && !state.tag.includes(v)) update({ tag: [...state.tag, v] });
    tagInput.value = "";
  };
  const addMetric = (e: Event) => {
    e.preventDefault();
    const name = metricName.value.trim();
    if (!name || metricValue.value === "" || !Number.isFinite(Number(metricValue.value))) return;
    update({ metric: [...state.metric, `${name}${metricOp.value}${Number(metricValue.value)}`] });
    metricValue.value = "";
  };
  const filters = h(
    "div",
    { class: "filters" },
    h("fieldset", null, h("legend", null, "Status"), statusBoxes),
    h("form", { class: "inline", on: { submit: addTag } }, h("fieldset", null, h("legend", null, "Tag"), tagInput, h("button", { type: "submit" }, "Add"))),
    h("form", { class: "inline", id: "metric-filter", on: { submit: addMetric } },
      h("fieldset", null, h("legend", null, "Metric threshold (last value)"), metricName, metricOp, metricValue, h("button", { type: "submit" }, "Add"))),
    h("label", { class: "check" },
      h("input", { type: "checkbox", checked: state.top, on: { change: (e) => update({ top: (e.target as HTMLInputElement).checked }) } }),
      "top-level runs only"),
    metricNames,
  );

  root.replaceChildren(
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h1", null, experiment), total),
      filters, chips, columnsBox),
    h("section", { class: "card" }, compareBar, tableBox, pager),
  );

  function renderChips(): void {
    const chip = (text: string, remove: () => void) =>
      h("span", { class: "chip" }, text, h("button", { class: "chip-x", title: "remove", attrs: { "aria-label": `remove ${text}` }, on: { click: remove } }, "×"));
    setChildren(
      chips,
      state.tag.map((t) => chip(`tag ${t}`, () => update({ tag: state.tag.filter((x) => x !== t) }))),
      state.metric.map((m) => chip(m, () => update({ metric: state.metric.filter((x) => x !== m) }))),
    );
  }

  function columns(): string[] {
    if (state.col.length) return state.col;
    return [...known].filter((n) => kinds.get(n) === "scalar" || kinds.get(n) === "list").sort().slice(0, DEFAULT_COLUMNS);
  }

  function renderColumnsPicker(): void {
    const shown = columns();
    setChildren(
      columnsBox,
      known.size ? h("span", { class: "muted" }, "Metric columns:") : null,
      [...known].sort().map((name) =>
        h("label", { class: "check" },
          h("input", {
            type: "checkbox",
            checked: shown.includes(name),
            data: { column: name },
            on: { change: (e) => update({ col: toggle(shown, name, (e.target as HTMLInputElement).checked) }, false) },
          }),
          name),
      ),
    );
    setChildren(metricNames, [...known].sort().map((n) => h("option", { value: n })));
  }

  function renderCompareBar(): void {
    compareBar.hidden = selected.size === 0;
    const ids = [...selected.keys()];
    setChildren(
      compareBar,
      `${selected.size} selected: `,
      [...selected.values()].join(", "),
      h("button", {
        class: "primary",
        id: "compare-selected",
        disabled: selected.size < 2,
        on: { click: () => navigate(`/compare?${ids.map((id) => `run=${enc(id)}`).join("&")}`) },
      }, "Compare"),
      h("button", { on: { click: () => { selected.clear(); renderCompareBar(); void load(); } } }, "Clear"),
    );
  }

  function sortHeader(label: Child, orderBy: string, extra: Record<string, string> = {}, numeric = false): HTMLElement {
    const active = state.orderBy === orderBy;
    const order = effectiveOrder(state);
    return h("th", { class: `sortable${numeric ? " num" : ""}${active ? " sorted" : ""}`, data: { sort: orderBy, ...extra }, attrs: { "aria-sort": active ? (order === "asc" ? "ascending" : "descending") : "none" } },
      h("button", {
        class: "th-button",
        on: {
          click: () => {
            if (active) update({ order: order === "asc" ? "desc" : "asc" });
            else update({ orderBy, order: "" });
          },
        },
      }, label, active ? (order === "asc" ? " ▲" : " ▼") : ""));
  }

  function metricCell(name: string, s: Summary | undefined): HTMLElement {
    if (!s) return h("td", { class: "num", data: { metric: name } });
    const spread = s.count > 1 && s.min !== null ? h("div", { class: "spread" }, `min ${fmtValue(s.min)} · max ${fmtValue(s.max)}`) : null;
    const last = toFloat(s.last);
    return h("td", {
      class: "num",
      data: { metric: name, value: last === null ? fmtValue(s.last) : String(last) },
      title: `last ${fmtValue(s.last)} (step ${s.last_step ?? "?"}), ${s.count} points`,
    }, fmtValue(s.last), spread);
  }

  function row(r: Run, cols: string[], params: string[]): HTMLElement {
    const label = runLabel(r);
    const box = h("input", {
      type: "checkbox",
      checked: selected.has(r.run_id),
      attrs: { "aria-label": `select ${label}` },
      on: {
        change: (e) => {
          if ((e.target as HTMLInputElement).checked) selected.set(r.run_id, label);
          else selected.delete(r.run_id);
          renderCompareBar();
        },
      },
    });
    const duration = r.duration_s ?? (r.status === "running" ? elapsed(r.started_at, null) : null);
    return h("tr", { data: { runId: r.run_id } },
      h("td", { class: "select" }, box),
      h("td", { class: "name" }, link(`/runs/${enc(r.run_id)}`, label), r.parent_run_id ? h("span", { class: "muted small" }, " child") : null),
      h("td", null, statusBadge(r.status)),
      h("td", null, fmtTime(r.started_at)),
      h("td", { class: "num" }, fmtDuration(duration)),
      h("td", { class: "tags" }, Object.entries(r.tags).map(([k, v]) => h("span", { class: "tag", data: { tagKey: k } }, v ? `${k}: ${v}` : k))),
      params.map((k) => h("td", { class: "param", data: { param: k } }, r.params[k] ?? "")),
      cols.map((c) => metricCell(c, r.metrics[c])),
    );
  }

  async function load(): Promise<void> {
    renderChips();
    const order = effectiveOrder(state);
    let page: { runs: Run[]; total: number };
    try {
      page = await api.runs(experiment, {
        status: state.status,
        tag: state.tag,
        metric: state.metric,
        order_by: state.orderBy,
        order,
        offset: state.offset,
        limit: state.limit,
        parent: state.top ? "none" : null,
      }, signal);
    } catch (err) {
      if (signal.aborted) return;
      setChildren(tableBox, message(`Could not load runs: ${(err as Error).message}`, "error"));
      return;
    }
    for (const r of page.runs) {
      for (const [name, s] of Object.entries(r.metrics)) {
        known.add(name);
        kinds.set(name, s.kind);
      }
    }
    const cols = columns();
    // Parameter columns: the keys the page's runs have (sortable by the server, as text).
    const params = [...new Set(page.runs.flatMap((r) => Object.keys(r.params)))].sort().slice(0, MAX_PARAM_COLUMNS);
    renderColumnsPicker();
    renderCompareBar();
    total.textContent = `${page.total.toLocaleString()} runs`;
    total.dataset.total = String(page.total);
    setChildren(
      tableBox,
      page.runs.length
        ? h("table", { class: "grid runs", id: "runs", data: { total: page.total, orderBy: state.orderBy, order } },
            h("thead", null, h("tr", null,
              h("th", { class: "select" }, ""),
              sortHeader("Run", "name"),
              sortHeader("Status", "status"),
              sortHeader("Started", "started_at"),
              h("th", { class: "num" }, "Duration"),
              h("th", null, "Tags"),
              params.map((k) => sortHeader(`params.${k}`, `param:${k}`, { param: k })),
              cols.map((c) => sortHeader(c, `metric:${c}`, { metric: c }, true)),
            )),
            h("tbody", null, page.runs.map((r) => row(r, cols, params))))
        : message("No runs match these filters."),
    );
    const first = page.total ? state.offset + 1 : 0;
    const last = state.offset + page.runs.length;
    setChildren(
      pager,
      h("button", { disabled: state.offset === 0, on: { click: () => update({ offset: Math.max(0, state.offset - state.limit) }) } }, "‹ Previous"),
      h("span", { class: "muted" }, `${first.toLocaleString()}–${last.toLocaleString()} of ${page.total.toLocaleString()}`),
      h("button", { disabled: last >= page.total, on: { click: () => update({ offset: state.offset + state.limit }) } }, "Next ›"),
      h("label", null, "Rows per page ",
        h("select", { on: { change: (e) => update({ limit: Number((e.target as HTMLSelectElement).value) }) } },
          PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === state.limit }, String(n))))),
    );
  }

  await load();
}

const MAX_PARAM_COLUMNS = 8;

function toggle(list: string[], item: string, on: boolean): string[] {
  const rest = list.filter((x) => x !== item);
  return on ? [...rest, item] : rest;
}
