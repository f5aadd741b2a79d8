// "/runs/{run_id}" (the URL run.get_portal_url() gives): details, tags, children, a chart
// per vector, a two-column chart per table, images, files, output and the history (events and
// who wrote each). While the run is running, its live stream updates all of these in place.
import { api, enc, fileUrl, TERMINAL_STATUSES, type RunDetail, type RunEvent, type Summary, type Value } from "../api";
import { TableChart, VectorChart } from "../charts";
import { h, inert, link, message, section, setChildren, statusBadge } from "../dom";
import { elapsed, fmtDuration, fmtTime, fmtValue, runLabel, shortId } from "../format";
import { follow, type LiveState } from "../live";
import type { PageContext } from "../main";
import { RunManagement } from "./run-manage";
import { EventsSection, FilesSection, OutputSection } from "./run-sections";

const TERMINAL = new Set<string>(TERMINAL_STATUSES);

function isVector(s: Summary): boolean {
  return s.kind === "list" || (s.kind === "scalar" && s.count > 1);
}

/** Run a function at most once per ``ms``, the last call winning. */
function throttle(fn: () => Promise<unknown> | void, ms: number): () => void {
  let timer: number | null = null;
  return () => {
    if (timer !== null) return;
    timer = window.setTimeout(() => {
      timer = null;
      Promise.resolve()
        .then(fn)
        .catch((err: Error) => err.name === "AbortError" || console.warn(err));
    }, ms);
  };
}

export async function runPage({ root, signal, crumbs }: PageContext, runId: string): Promise<void> {
  root.append(message("Loading run…"));
  let run: RunDetail = await api.run(runId, signal);
  const setCrumbs = () => {
    document.title = `${inert(runLabel(run))} · runstream`;
    crumbs(link("/", "Experiments"), link(`/experiments/${enc(run.experiment)}`, run.experiment), runLabel(run));
  };
  setCrumbs();

  const title = h("h1", null, runLabel(run));
  const badge = h("span", { id: "run-status" });
  const live = h("span", { class: "live", id: "live", hidden: true });
  const details = h("dl", { class: "details" });
  const params = h("div", { class: "chips", id: "params" });
  const children = h("div", { id: "children" });
  const scalars = h("div", { id: "scalars" });
  const charts = h("div", { class: "charts", id: "charts" });
  const tables = h("div", { class: "charts", id: "tables" });
  const images = h("div", { class: "images", id: "images" });
  const files = new FilesSection(runId, signal);
  const output = new OutputSection(runId, signal);
  const events = new EventsSection(runId, signal);
  const vectorCharts = new Map<string, VectorChart>();
  const tableCharts = new Map<string, TableChart>();
  // A change (rename, tags, note, delete, restore) answers the run's detail: redraw from it
  // and show the change's events in the history.
  const manage = new RunManagement(run, title, (changed) => {
    run = changed;
    setCrumbs();
    renderHeader();
    renderParams();
    renderTags();
    void events.loadNew();
  });
  const head = h("section", { class: "card", id: "run-head" },
    h("div", { class: "card-head" }, title, manage.renameForm, manage.renameButton, badge, live, manage.deleteButton),
    manage.lifecycle,
    details,
    h("h2", null, "Note"), manage.note,
    h("h2", null, "Params"), params,
    h("h2", null, "Tags"), manage.tags);

  root.replaceChildren(
    head,
    section("Child runs", "children-section", children),
    section("Metrics", "metrics", scalars, charts),
    section("Tables", "tables-section", tables),
    section("Images", "images-section", images),
    section("Files", "files-section", files.el),
    section("Output", "output-section", output.el),
    section("History", "events-section", events.el),
  );
  const show = (id: string, visible: boolean) => ((document.getElementById(id) as HTMLElement).hidden = !visible);

  function renderHeader(): void {
    title.textContent = inert(runLabel(run));
    setChildren(badge, statusBadge(run.status),
      run.deleted ? h("span", { class: "badge status-deleted", id: "run-deleted", title: "hidden from the runs lists; restorable" }, "deleted") : null);
    head.classList.toggle("is-deleted", run.deleted);
    const duration = run.duration_s ?? (run.status === "running" ? elapsed(run.started_at, null) : null);
    const item = (term: string, ...value: (Node | string)[]) => [h("dt", null, term), h("dd", null, ...value)];
    setChildren(
      details,
      item("Run id", h("code", null, run.run_id)),
      item("Experiment", link(`/experiments/${enc(run.experiment)}`, run.experiment)),
      run.name ? item("Name", run.name) : null,
      item("Kind", run.kind),
      run.parent_run_id ? item("Parent", link(`/runs/${enc(run.parent_run_id)}`, shortId(run.parent_run_id))) : null,
      item("Started", fmtTime(run.started_at)),
      item("Ended", fmtTime(run.ended_at) || "—"),
      item("Duration", fmtDuration(duration) || "—"),
      item("Events", String(run.last_seq + 1)),
      run.dead_letters
        ? [h("dt", null, "Dead letters"), h("dd", { id: "run-dead-letters", class: "dead-letters",
            title: "Not stored: see `runstream dead-letters list --run " + run.run_id + "`" }, String(run.dead_letters))]
        : null,
      Object.entries(run.properties ?? {}).map(([k, v]) => item(k, fmtValue(v))),
      run.error ? [h("dt", null, "Error"), h("dd", { class: "wide" }, h("pre", { class: "error" }, run.error))] : null,
    );
  }

  function renderParams(): void {
    const entries = Object.entries(run.params ?? {});
    setChildren(
      params,
      entries.length
        ? entries.map(([k, v]) => h("span", { class: "tag", data: { paramKey: k } }, h("b", null, k), `: ${v}`))
        : h("span", { class: "muted" }, "No params."),
    );
  }

  function renderTags(): void {
    manage.render(run);
  }

  async function loadChildren(): Promise<void> {
    show("children-section", run.children.length > 0);
    if (!run.children.length) return;
    const page = await api.runs(run.experiment, { parent: run.run_id, limit: 1000, order_by: "started_at", order: "asc" }, signal);
    setChildren(children,
      h("table", { class: "grid" },
        h("thead", null, h("tr", null, h("th", null, "Run"), h("th", null, "Status"), h("th", null, "Started"), h("th", null, "Duration"))),
        h("tbody", null, page.runs.map((c) =>
          h("tr", { data: { runId: c.run_id } },
            h("td", null, link(`/runs/${enc(c.run_id)}`, runLabel(c))),
            h("td", null, statusBadge(c.status)),
            h("td", null, fmtTime(c.started_at)),
            h("td", { class: "num" }, fmtDuration(c.duration_s)))))));
  }

  async function loadTable(name: string): Promise<void> {
    const chart = tableCharts.get(name);
    if (!chart) return;
    const t = await api.table(runId, name, signal);
    chart.set(t.columns, t.rows);
  }

  /** (Re)build the metric sections from run.metrics; existing charts are kept. */
  function renderMetrics(): void {
    const entries = Object.entries(run.metrics).sort(([a], [b]) => a.localeCompare(b));
    const single = entries.filter(([, s]) => s.kind === "scalar" && s.count <= 1);
    setChildren(
      scalars,
      single.length
        ? h("table", { class: "grid scalars" },
            h("thead", null, h("tr", null, h("th", null, "Metric"), h("th", { class: "num" }, "Value"), h("th", null, "Description"))),
            h("tbody", null, single.map(([name, s]) =>
              h("tr", { data: { metric: name } }, h("td", null, name), h("td", { class: "num" }, fmtValue(s.last)), h("td", { class: "muted" }, s.description ?? "")))))
        : null,
    );
    for (const [name, s] of entries) {
      if (isVector(s) && !vectorCharts.has(name)) {
        const chart = new VectorChart(runId, name, signal);
        vectorCharts.set(name, chart);
        charts.append(chart.el);
        void chart.load(null);
      }
      if (s.kind === "table" && !tableCharts.has(name)) {
        const chart = new TableChart(name, signal);
        tableCharts.set(name, chart);
        tables.append(chart.el);
        void loadTable(name);
      }
    }
    // Keep charts in name order even when one appears live.
    [...vectorCharts.keys()].sort().forEach((n) => charts.append(vectorCharts.get(n)!.el));
    if (!entries.length) setChildren(scalars, message("No metrics."));
    show("metrics", !entries.length || single.length > 0 || vectorCharts.size > 0);
    show("tables-section", tableCharts.size > 0);
  }

  function renderImages(fileList: { path: string; content_type: string }[]): void {
    const fromMetrics = Object.entries(run.metrics)
      .filter(([, s]) => s.kind === "image" && typeof s.last === "string")
      .map(([name, s]) => ({ name, path: s.last as string }));
    const shown = new Set(fromMetrics.map((m) => m.path));
    const fromFiles = fileList
      .filter((f) => f.content_type.startsWith("image/") && !shown.has(f.path))
      .map((f) => ({ name: f.path, path: f.path }));
    const all = [...fromMetrics, ...fromFiles];
    setChildren(images, all.map((img) =>
      h("figure", { data: { image: img.name } },
        h("a", { href: fileUrl(runId, img.path), target: "_blank", rel: "noopener" },
          h("img", { src: fileUrl(runId, img.path), alt: img.name, loading: "lazy" })),
        h("figcaption", null, img.name))));
    show("images-section", all.length > 0);
  }

  let fileList: { path: string; content_type: string }[] = [];
  const refreshFiles = throttle(async () => {
    fileList = await files.load();
    renderImages(fileList);
  }, 300);
  const refreshRun = throttle(async () => {
    run = await api.run(runId, signal);
    setCrumbs();
    renderHeader();
    renderParams();
    renderTags();
    renderMetrics();
    renderImages(fileList);
    void loadChildren();
  }, 300);
  const refreshTables = new Map<string, () => void>();

  renderHeader();
  renderParams();
  renderTags();
  renderMetrics();
  await Promise.all([
    loadChildren(),
    files.load().then((f) => {
      fileList = f;
      renderImages(f);
    }),
    output.load(),
    events.loadPage(),
  ]);

  function onEvent(e: RunEvent): void {
    events.addLive(e);
    const p = e.payload as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    if (Number.isSafeInteger(e.seq)) run.last_seq = Math.max(run.last_seq, e.seq); // not a server seq (2**62 up)
    switch (e.type) {
      case "run.status":
        run.status = p.status;
        run.error = p.error ?? run.error;
        renderHeader();
        refreshRun();
        break;
      case "metric.points":
        for (const s of p.series as { name: string; steps: number[]; values: Value[]; times: number[] }[]) {
          const chart = vectorCharts.get(s.name);
          if (chart) chart.append(s.steps, s.values, s.times);
          else refreshRun();
        }
        break;
      case "metric.list": {
        const chart = vectorCharts.get(p.name);
        const values = p.values as Value[];
        if (chart) chart.append(values.map((_, i) => p.start_step + i), values, values.map(() => e.ts));
        else refreshRun();
        break;
      }
      case "metric.rows":
      case "metric.table": {
        if (!tableCharts.has(p.name)) {
          refreshRun();
          break;
        }
        if (!refreshTables.has(p.name)) refreshTables.set(p.name, throttle(() => loadTable(p.name), 300));
        refreshTables.get(p.name)!();
        break;
      }
      case "tag.set":
        run.tags[p.key] = p.value ?? null;
        renderTags();
        break;
      case "tag.removed":
        delete run.tags[p.key];
        renderTags();
        break;
      case "artifact.recorded":
        refreshFiles();
        break;
      case "params.logged":
        run.params = { ...p.params, ...run.params }; // the first value of a key stays
        renderParams();
        break;
      case "metric.image":
        refreshRun();
        refreshFiles();
        break;
      case "log.lines":
        output.addEvent(e);
        break;
      default:
        refreshRun();
    }
  }

  const showLive = (s: LiveState) => {
    live.hidden = false;
    live.dataset.state = s;
    live.textContent = {
      connecting: "connecting…", open: "● live", retrying: "reconnecting…", ended: "run ended",
      failed: "live updates unavailable (reload to see new data)",
    }[s];
    if (s === "ended") refreshRun();
  };
  if (!TERMINAL.has(run.status)) follow(runId, run.last_seq, signal, { event: onEvent, state: showLive });
}
