// "/experiments/{name}": the runs table. Filtering, sorting and paging happen in the API
// (GET /api/experiments/{name}/runs), so 10,000 runs cost one page of rows; the page's
// state lives in the URL's query, so a filtered, sorted view can be shared and reloaded.
import { ApiError, api, enc, manage, NOTE_TAG, STATUSES, toFloat, url, type Query, type Run, type Summary, type Value } from "../api";
import { cellValue, columnKey, columnLabel, isMetric, numericValue, parseColumn, sortKey, type Column } from "../columns";
import { CurvesChart } from "../curves";
import { h, link, message, setChildren, statusBadge, type Child } from "../dom";
import { elapsed, fmtDuration, fmtTime, fmtValue, runLabel } from "../format";
import type { PageContext } from "../main";
import { navigate } from "../nav";
import { ParallelChart, ScatterChart } from "../sweep";
import { errorText } from "./run-manage";

const OPERATORS = ["<", "<=", ">", ">=", "=", "!="];
const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_COLUMNS = 8;
const DEFAULT_PARAMS = 4;
/** Runs the sweep charts read (the filtered runs, newest first). */
const CHART_RUNS = 1000;

interface State {
  filter: string;
  status: string[];
  tag: string[];
  metric: string[];
  col: string[];
  orderBy: string;
  order: "asc" | "desc" | "";
  offset: number;
  limit: number;
  top: boolean;
  /** The "Deleted runs" view (the API's deleted=only). */
  deleted: boolean;
}

function parse(p: URLSearchParams): State {
  const limit = Number(p.get("limit"));
  return {
    filter: p.get("filter") ?? "",
    status: p.getAll("status"),
    tag: p.getAll("tag"),
    metric: p.getAll("metric"),
    col: p.getAll("col"),
    orderBy: p.get("order_by") || "started_at",
    order: (p.get("order") as State["order"]) || "",
    offset: Math.max(0, Number(p.get("offset")) || 0),
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
    top: p.get("top") === "1",
    deleted: p.get("deleted") === "only",
  };
}

function toQuery(s: State): URLSearchParams {
  const p = new URLSearchParams();
  if (s.filter) p.set("filter", s.filter);
  s.status.forEach((v) => p.append("status", v));
  s.tag.forEach((v) => p.append("tag", v));
  s.metric.forEach((v) => p.append("metric", v));
  s.col.forEach((v) => p.append("col", v));
  if (s.orderBy !== "started_at") p.set("order_by", s.orderBy);
  if (s.order) p.set("order", s.order);
  if (s.offset) p.set("offset", String(s.offset));
  if (s.limit !== 50) p.set("limit", String(s.limit));
  if (s.top) p.set("top", "1");
  if (s.deleted) p.set("deleted", "only");
  return p;
}

function effectiveOrder(s: State): "asc" | "desc" {
  return s.order || (s.orderBy === "started_at" ? "desc" : "asc");
}

export async function runsPage({ root, signal, params, crumbs }: PageContext, experiment: string): Promise<void> {
  document.title = `${experiment} · runstream`;
  crumbs(link("/", "Experiments"), experiment);
  const state = parse(params);
  const known = new Set<string>(state.col.map(parseColumn).filter(isMetric).map((c) => c.name));
  const knownParams = new Set<string>();
  const knownTags = new Set<string>();
  let brush = "";
  let chartsKey = "";
  const kinds = new Map<string, Summary["kind"]>();
  const selected = new Map<string, string>();

  const total = h("span", { class: "muted", id: "runs-total" });
  const tableBox = h("div", { class: "table-scroll" }, message("Loading runs…"));
  const pager = h("div", { class: "pager" });
  const chips = h("div", { class: "chips", id: "active-filters" });
  const columnsBox = h("div", { class: "columns-picker" });
  const metricNames = h("datalist", { id: "metric-names" });
  const compareBar = h("div", { class: "compare-bar", id: "selection-bar", hidden: true });
  // The progress and per-run errors of the last delete/restore of selected runs; kept
  // across the table's redraws.
  const bulkStatus = h("div", { class: "bulk-status", id: "bulk-status", hidden: true, attrs: { role: "status" } });
  let confirmDelete = false;
  let bulkBusy = false;
  const heading = h("h1", null, experiment);
  const deletedToggle = h("button", {
    id: "deleted-toggle", type: "button", attrs: { "aria-pressed": String(state.deleted) },
    title: "Runs deleted from this experiment (restorable)",
    on: { click: () => { selected.clear(); confirmDelete = false; bulkStatus.hidden = true; update({ deleted: !state.deleted }); } },
  });
  const searchInput = h("input", {
    type: "search", id: "search", value: state.filter, size: 60, spellcheck: false,
    placeholder: 'metrics.mse < 3300 and params.alpha >= 0.2 or tags.team = "a"',
    attrs: { "aria-label": "search runs", autocomplete: "off" },
  });
  const searchError = h("div", { class: "search-error", id: "search-error", hidden: true });
  const brushChip = h("div", { class: "chips", id: "brush-filter" });
  const csvLink = h("a", { class: "button", id: "download-csv", attrs: { download: "" } }, "Download CSV");
  const scatter = new ScatterChart(signal);
  const parallel = new ParallelChart(signal, (f) => {
    brush = f;
    state.offset = 0;
    void load();
  });
  const curves = new CurvesChart(experiment, signal);

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
  const searchForm = h("form", {
    class: "search", id: "search-form",
    on: {
      submit: (e) => {
        e.preventDefault();
        update({ filter: searchInput.value.trim() });
      },
    },
  }, searchInput, h("button", { type: "submit", class: "primary" }, "Search"),
  h("button", { type: "button", on: { click: () => { searchInput.value = ""; update({ filter: "" }); } } }, "Clear"),
  h("span", { class: "muted small" }, " metrics.<name>[.min|.max], params.<name>, tags.<key>, status, name, duration; and/or, ( ), = != < <= > >= like in"));
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
      h("div", { class: "card-head" }, heading, total, deletedToggle, csvLink),
      searchForm, searchError, filters, chips, brushChip, columnsBox),
    h("section", { class: "card" }, compareBar, bulkStatus, tableBox, pager),
    h("section", { class: "card", id: "sweep-charts" }, h("h2", null, "Charts"),
      h("div", { class: "charts" }, scatter.el, parallel.el), curves.el),
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

  const plottable = (n: string) => kinds.get(n) === "scalar" || kinds.get(n) === "list";

  function columns(): Column[] {
    if (state.col.length) return state.col.map(parseColumn);
    const metrics = [...known].filter(plottable).sort().slice(0, DEFAULT_COLUMNS);
    const props = [...knownParams].sort().slice(0, DEFAULT_PARAMS);
    return [...props.map((n) => parseColumn(columnKey("param", n))), ...metrics.map((n) => parseColumn(n))];
  }

  function renderColumnsPicker(): void {
    const shown = columns().map((c) => c.key);
    const box = (key: string, text: string) =>
      h("label", { class: "check" },
        h("input", {
          type: "checkbox",
          checked: shown.includes(key),
          data: { column: key },
          on: { change: (e) => update({ col: toggle(shown, key, (e.target as HTMLInputElement).checked) }, false) },
        }),
        text);
    setChildren(
      columnsBox,
      h("details", { id: "columns-picker" },
        h("summary", null, `Columns (${shown.length})`),
        known.size ? h("div", { class: "column-group" }, h("span", { class: "muted" }, "Metrics (last · min · max):"),
          [...known].sort().map((name) => h("span", { class: "metric-columns" },
            box(name, name), box(columnKey("min", name), "min"), box(columnKey("max", name), "max")))) : null,
        knownParams.size ? h("div", { class: "column-group" }, h("span", { class: "muted" }, "Params:"),
          [...knownParams].sort().map((n) => box(columnKey("param", n), n))) : null,
        knownTags.size ? h("div", { class: "column-group" }, h("span", { class: "muted" }, "Tags:"),
          [...knownTags].sort().map((n) => box(columnKey("tag", n), n))) : null),
    );
    setChildren(metricNames, [...known].sort().map((n) => h("option", { value: n })));
  }

  /** The user's search and the parallel chart's brush, both as one search filter. */
  function effectiveFilter(): string {
    if (state.filter && brush) return `(${state.filter}) and (${brush})`;
    return state.filter || brush;
  }

  /** The listing's filters (no paging, no brush): what the charts and the CSV read. */
  function filterQuery(withBrush: boolean): Query {
    return {
      filter: withBrush ? effectiveFilter() : state.filter,
      status: state.status,
      tag: state.tag,
      metric: state.metric,
      parent: state.top ? "none" : null,
      deleted: state.deleted ? "only" : null,
    };
  }

  function showSearchError(err: unknown): boolean {
    if (!(err instanceof ApiError) || err.status !== 400 || !/^filter: /.test(err.message)) {
      searchError.hidden = true;
      return false;
    }
    const m = /at position (\d+)/.exec(err.message);
    const pos = m ? Number(m[1]) : null;
    setChildren(searchError,
      h("div", { class: "msg msg-error", id: "search-error-message" }, err.message),
      pos !== null && state.filter && pos <= state.filter.length
        ? h("pre", { class: "caret" }, state.filter, "\n", " ".repeat(pos), "^")
        : null);
    searchError.dataset.position = pos === null ? "" : String(pos);
    searchError.hidden = false;
    if (pos !== null) {
      searchInput.focus();
      searchInput.setSelectionRange(pos, pos);
    }
    return true;
  }

  function renderBrushChip(): void {
    setChildren(brushChip, brush
      ? h("span", { class: "chip", id: "brush-chip" }, `brushed: ${brush}`,
          h("button", { class: "chip-x", title: "clear the brush", attrs: { "aria-label": "clear the brush" }, on: { click: () => parallel.clear() } }, "×"))
      : null);
  }

  async function loadCharts(): Promise<void> {
    const query = filterQuery(false);
    const key = JSON.stringify(query);
    if (key === chartsKey) return;
    chartsKey = key;
    let runs: Run[];
    try {
      runs = (await api.runs(experiment, { ...query, limit: CHART_RUNS, order_by: "started_at", order: "desc" }, signal)).runs;
    } catch {
      return; // the table shows the error
    }
    if (signal.aborted || key !== chartsKey) return;
    const numeric = (c: Column) => runs.some((r) => numericValue(r, c) !== null);
    const metricCols = [...known].filter(plottable).sort().flatMap((n) => [n, columnKey("min", n), columnKey("max", n)]).map(parseColumn);
    const candidates = [
      ...[...knownParams].sort().map((n) => parseColumn(columnKey("param", n))),
      ...metricCols,
      ...[...knownTags].sort().map((n) => parseColumn(columnKey("tag", n))),
    ].filter(numeric);
    const lastMetrics = candidates.filter((c) => c.kind === "last");
    const params = candidates.filter((c) => c.kind === "param");
    // alpha vs mse for the seed's sweep: x a param (else the first metric), y the sorted
    // metric (else the first other metric)
    const x = params[0]?.key ?? lastMetrics[0]?.key;
    const sorted = state.orderBy.startsWith("metric:") ? state.orderBy.slice("metric:".length) : undefined;
    const y = sorted && sorted !== x ? sorted : lastMetrics.find((c) => c.key !== x)?.key;
    scatter.set(runs, candidates, x, y);
    const axes = columns().filter(numeric);
    parallel.set(runs, axes.length >= 2 ? axes : candidates.slice(0, 6));
    const groupables = [...[...knownParams].sort().map((n) => parseColumn(columnKey("param", n))),
      ...[...knownTags].sort().map((n) => parseColumn(columnKey("tag", n)))];
    const vectors = [...known].filter((n) => plottable(n) && runs.some((r) => (r.metrics[n]?.count ?? 0) > 1)).sort();
    curves.set(vectors, groupables, runs, query);
  }

  function renderCompareBar(): void {
    compareBar.hidden = selected.size === 0;
    const ids = [...selected.keys()];
    const n = selected.size;
    const lifecycle = state.deleted
      ? h("button", { id: "restore-selected", disabled: bulkBusy, on: { click: () => void bulk("restore", [...selected]) } }, `Restore ${n}`)
      : confirmDelete
        ? h("span", { class: "confirm", id: "delete-selected-confirm" },
            `Delete ${n} run${n === 1 ? "" : "s"}? They can be restored from Deleted runs. `,
            h("button", { class: "danger", id: "delete-selected-yes", disabled: bulkBusy,
              on: { click: () => { confirmDelete = false; void bulk("delete", [...selected]); } } }, `Delete ${n}`),
            h("button", { id: "delete-selected-cancel", on: { click: () => { confirmDelete = false; renderCompareBar(); } } }, "Cancel"))
        : h("button", { class: "danger", id: "delete-selected", disabled: bulkBusy,
            on: { click: () => { confirmDelete = true; renderCompareBar(); } } }, "Delete…");
    setChildren(
      compareBar,
      `${n} selected: `,
      [...selected.values()].join(", "),
      h("button", {
        class: "primary",
        id: "compare-selected",
        disabled: n < 2,
        on: { click: () => navigate(`/compare?${ids.map((id) => `run=${enc(id)}`).join("&")}`) },
      }, "Compare"),
      lifecycle,
      h("button", { on: { click: () => { selected.clear(); confirmDelete = false; renderCompareBar(); void load(); } } }, "Clear"),
    );
  }

  /** Delete or restore runs, one request each, showing progress and each run's error;
   * then reload the table (the changed runs leave this view). */
  async function bulk(action: "delete" | "restore", runs: [string, string][]): Promise<void> {
    if (bulkBusy || !runs.length) return;
    bulkBusy = true;
    renderCompareBar();
    const verb = action === "delete" ? "Deleting" : "Restoring";
    const progress = h("span", { id: "bulk-progress" });
    const errors = h("ul", { class: "bulk-errors", id: "bulk-errors" });
    setChildren(bulkStatus, progress, errors);
    bulkStatus.hidden = false;
    bulkStatus.dataset.state = "running";
    let done = 0;
    for (const [i, [id, label]] of runs.entries()) {
      progress.textContent = `${verb} ${i + 1} of ${runs.length}…`;
      try {
        await manage[action](id);
        selected.delete(id);
        done++;
      } catch (err) {
        errors.append(h("li", { class: "msg-error", data: { runId: id } }, `${label}: ${errorText(err)}`));
      }
    }
    const failed = runs.length - done;
    setChildren(progress, `${action === "delete" ? "Deleted" : "Restored"} ${done} of ${runs.length} run${runs.length === 1 ? "" : "s"}`,
      failed ? `; ${failed} failed:` : ".",
      action === "delete" && done ? [" ", link(`/experiments/${enc(experiment)}?deleted=only`, "See deleted runs")] : null);
    bulkStatus.dataset.state = failed ? "failed" : "done";
    bulkBusy = false;
    chartsKey = "";
    await load();
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

  function cell(r: Run, c: Column): HTMLElement {
    if (c.kind === "last") return metricCell(c.name, r.metrics[c.name]);
    const v: Value | undefined = cellValue(r, c);
    const n = numericValue(r, c);
    return h("td", { class: n === null ? "" : "num", data: { col: c.key, value: v === undefined ? null : n === null ? fmtValue(v) : String(n) } },
      v === undefined ? "" : fmtValue(v));
  }

  function row(r: Run, cols: Column[]): HTMLElement {
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
      h("td", { class: "tags" }, Object.entries(r.tags).map(([k, v]) => k === NOTE_TAG
        // the run's note (run management): its first line, the whole note on hover
        ? h("span", { class: "tag note", data: { tagKey: k }, title: v ?? "" }, `note: ${noteLine(v ?? "")}`)
        : h("span", { class: "tag", data: { tagKey: k } }, v ? `${k}: ${v}` : k))),
      cols.map((c) => cell(r, c)),
      state.deleted
        ? h("td", null, h("button", { class: "small", data: { restore: r.run_id }, disabled: bulkBusy,
            on: { click: () => void bulk("restore", [[r.run_id, label]]) } }, "Restore"))
        : null,
    );
  }

  async function load(): Promise<void> {
    renderChips();
    setChildren(heading, experiment, state.deleted ? h("span", { class: "muted" }, ": deleted runs") : null);
    deletedToggle.textContent = state.deleted ? "‹ Back to runs" : "Deleted runs";
    deletedToggle.setAttribute("aria-pressed", String(state.deleted));
    const order = effectiveOrder(state);
    renderBrushChip();
    if (searchInput.value.trim() !== state.filter) searchInput.value = state.filter;
    const query = filterQuery(true);
    csvLink.href = url(`/api/experiments/${enc(experiment)}/runs.csv`, { ...query, order_by: state.orderBy, order });
    let page: { runs: Run[]; total: number };
    try {
      page = await api.runs(experiment, {
        ...query,
        order_by: state.orderBy,
        order,
        offset: state.offset,
        limit: state.limit,
      }, signal);
    } catch (err) {
      if (signal.aborted) return;
      const bad = showSearchError(err);
      setChildren(tableBox, message(bad ? "Fix the search to see runs." : `Could not load runs: ${(err as Error).message}`, "error"));
      total.textContent = "";
      return;
    }
    searchError.hidden = true;
    for (const r of page.runs) {
      for (const [name, s] of Object.entries(r.metrics)) {
        known.add(name);
        kinds.set(name, s.kind);
      }
      Object.keys(r.properties ?? {}).forEach((p) => knownParams.add(p));
      Object.keys(r.params ?? {}).forEach((p) => knownParams.add(p));
      Object.keys(r.tags).forEach((t) => knownTags.add(t));
    }
    const cols = columns();
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
              sortHeader("Duration", "duration", {}, true),
              h("th", null, "Tags"),
              cols.map((c) => sortHeader(columnLabel(c), sortKey(c), c.kind === "last" ? { metric: c.name, col: c.key } : { col: c.key }, isMetric(c) || c.kind === "param")),
              state.deleted ? h("th", null, "") : null,
            )),
            h("tbody", null, page.runs.map((r) => row(r, cols))))
        : message(state.deleted ? "No deleted runs match these filters." : "No runs match these filters."),
    );
    void loadCharts();
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


/** A note's first line, cut to 60 characters. */
function noteLine(note: string): string {
  const first = note.split("\n")[0];
  return first.length > 60 || first !== note ? `${first.slice(0, 60)}…` : first;
}

function toggle(list: string[], item: string, on: boolean): string[] {
  const rest = list.filter((x) => x !== item);
  return on ? [...rest, item] : rest;
}
