// A vector metric across a sweep's runs: either each run's curve (the runs on the table's
// page, at most MAX_RUNS) or runs grouped by a tag or param, drawn as the group's mean with
// a min–max band that the server computes from every point (GET /api/experiments/{name}/groups).
// Smoothing is an exponential moving average (debiased, as TensorBoard's) with the raw
// curve kept faintly behind; the x axis is step, wall time or time since the run's first
// point; either axis can be logarithmic.
import uPlot from "uplot";
import { api, enc, get, toNumber, type MetricGroups, type Query, type Run, type Vector } from "./api";
import { PALETTE, pointsFor } from "./charts";
import { columnLabel, type Column } from "./columns";
import { h, setChildren } from "./dom";
import { fmtNumber, runLabel } from "./format";

const HEIGHT = 280;
const MAX_RUNS = 10;

type XAxis = "step" | "wall" | "relative";

/** EMA with weight ``w`` in [0, 1), debiased so the curve starts at the first value; nulls pass through. */
export function ema(values: (number | null)[], w: number): (number | null)[] {
  if (w <= 0) return values;
  let acc = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null) return null;
    acc = acc * w + (1 - w) * v;
    n++;
    return acc / (1 - w ** n);
  });
}

function faint(color: string): string {
  return `${color}40`;
}

interface Curve {
  label: string;
  color: string;
  xs: number[];
  ys: (number | null)[];
  lo?: (number | null)[];
  hi?: (number | null)[];
  /** Each point's wall time (epoch seconds): a run's curve only. */
  times?: number[];
}

export class CurvesChart {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "chart-body" });
  private readonly meta = h("span", { class: "chart-meta" });
  private readonly metricPick: HTMLSelectElement;
  private readonly groupPick: HTMLSelectElement;
  private readonly xPick: HTMLSelectElement;
  private readonly smooth: HTMLInputElement;
  private readonly smoothOut = h("output", { class: "small" });
  private readonly logX: HTMLInputElement;
  private readonly logY: HTMLInputElement;
  private plot: uPlot | null = null;
  private runs: Run[] = [];
  private query: Query = {};
  private curves: Curve[] = [];
  private grouped = false;
  private seq = 0;

  constructor(private readonly experiment: string, private readonly signal: AbortSignal) {
    const reload = () => void this.load();
    const redraw = () => this.draw();
    this.metricPick = h("select", { id: "curve-metric", attrs: { "aria-label": "metric" }, on: { change: reload } });
    this.groupPick = h("select", { id: "curve-group", attrs: { "aria-label": "group by" }, on: { change: reload } });
    this.xPick = h("select", { id: "curve-x", attrs: { "aria-label": "x axis" }, on: { change: redraw } },
      h("option", { value: "step" }, "step"), h("option", { value: "wall" }, "wall time"),
      h("option", { value: "relative" }, "relative time"));
    this.smooth = h("input", {
      type: "range", id: "curve-smoothing", min: "0", max: "0.99", step: "0.01", value: "0",
      attrs: { "aria-label": "smoothing" }, on: { input: redraw },
    });
    this.logX = h("input", { type: "checkbox", id: "curve-log-x", on: { change: redraw } });
    this.logY = h("input", { type: "checkbox", id: "curve-log-y", on: { change: redraw } });
    this.el = h("div", { class: "chart", id: "curves", data: { state: "loading" } },
      h("div", { class: "chart-head" }, h("h3", null, "Curves"), this.meta),
      h("div", { class: "chart-head controls" },
        h("label", { class: "pick" }, "metric ", this.metricPick),
        h("label", { class: "pick" }, "group by ", this.groupPick),
        h("label", { class: "pick" }, "x ", this.xPick),
        h("label", { class: "pick" }, "smoothing ", this.smooth, " ", this.smoothOut),
        h("label", { class: "pick" }, this.logX, " log x"),
        h("label", { class: "pick" }, this.logY, " log y")),
      this.body);
    const resize = new ResizeObserver(() => {
      const width = this.body.clientWidth;
      if (this.plot && width > 0 && Math.abs(width - this.plot.width) > 2) this.plot.setSize({ width, height: HEIGHT });
    });
    resize.observe(this.body);
    signal.addEventListener("abort", () => {
      resize.disconnect();
      this.plot?.destroy();
    });
  }

  /** Vector metrics to choose from, columns to group by, the page's runs and the listing's filters. */
  set(metrics: string[], groupables: Column[], runs: Run[], query: Query): void {
    const keepMetric = this.metricPick.value;
    const keepGroup = this.groupPick.value;
    setChildren(this.metricPick, metrics.map((m) => h("option", { value: m }, m)));
    if (metrics.includes(keepMetric)) this.metricPick.value = keepMetric;
    setChildren(this.groupPick, h("option", { value: "" }, "— each run —"),
      groupables.map((c) => h("option", { value: `${c.kind}:${c.name}` }, columnLabel(c))));
    if ([...this.groupPick.options].some((o) => o.value === keepGroup)) this.groupPick.value = keepGroup;
    this.runs = runs.slice(0, MAX_RUNS);
    this.query = query;
    void this.load();
  }

  async load(): Promise<void> {
    const metric = this.metricPick.value;
    const seq = ++this.seq;
    if (!metric) {
      this.curves = [];
      this.draw();
      return;
    }
    this.el.dataset.state = "loading";
    const groupBy = this.groupPick.value;
    const maxPoints = pointsFor(this.body);
    try {
      if (groupBy) {
        const g = await get<MetricGroups>(`/api/experiments/${enc(this.experiment)}/groups`,
          { ...this.query, name: metric, group_by: groupBy, max_points: maxPoints, limit: 1000 }, this.signal);
        if (seq !== this.seq) return;
        this.grouped = true;
        this.curves = g.groups.map((b, i) => ({
          label: `${b.group ?? "(none)"} · ${b.runs} run${b.runs === 1 ? "" : "s"}`,
          color: PALETTE[i % PALETTE.length], xs: b.steps, ys: b.mean, lo: b.min, hi: b.max,
        }));
        this.el.dataset.groups = String(g.groups.length);
      } else {
        const vectors = await Promise.all(this.runs.map((r) =>
          api.vector(r.run_id, metric, { max_points: maxPoints }, this.signal).catch(() => null as Vector | null)));
        if (seq !== this.seq) return;
        this.grouped = false;
        this.curves = [];
        vectors.forEach((v, i) => {
          if (!v || !v.steps.length) return;
          const r = this.runs[i];
          const color = PALETTE[this.curves.length % PALETTE.length];
          this.curves.push({ label: runLabel(r), color, xs: v.steps, ys: v.values.map(toNumber), times: v.times });
        });
        this.el.dataset.groups = "";
      }
    } catch (err) {
      if (this.signal.aborted || seq !== this.seq) return;
      this.el.dataset.state = "error";
      this.meta.textContent = `could not load: ${(err as Error).message}`;
      return;
    }
    this.draw();
  }

  private xsOf(c: Curve): number[] {
    const times = c.times;
    const axis = this.xPick.value as XAxis;
    if (this.grouped || axis === "step" || !times) return c.xs;
    if (axis === "wall") return times;
    const t0 = times.length ? Math.min(...times) : 0;
    return times.map((t) => t - t0);
  }

  private draw(): void {
    const w = Number(this.smooth.value);
    this.smoothOut.textContent = w.toFixed(2);
    const axis = this.grouped ? "step" : (this.xPick.value as XAxis);
    this.xPick.disabled = this.grouped;
    this.logX.disabled = axis === "wall";
    const logX = this.logX.checked && axis !== "wall";
    const logY = this.logY.checked;
    const ok = (v: number | null | undefined, log: boolean) => (v === null || v === undefined || (log && v <= 0) ? null : v);
    // One x for every series (uPlot's aligned data): the union of the curves' x values.
    const perCurve = this.curves.map((c) => ({ c, xs: this.xsOf(c) }));
    const xs = [...new Set(perCurve.flatMap((p) => p.xs))].filter((x) => !logX || x > 0).sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const column = (p: { xs: number[] }, ys: (number | null)[] | undefined) => {
      const col: (number | null)[] = new Array(xs.length).fill(null);
      p.xs.forEach((x, i) => {
        const j = at.get(x);
        if (j !== undefined) col[j] = ok(ys?.[i], logY);
      });
      return col;
    };
    const series: uPlot.Series[] = [{ label: axis === "step" ? "step" : axis === "wall" ? "time" : "seconds" }];
    const data: (number | null)[][] = [xs];
    const bands: uPlot.Band[] = [];
    for (const p of perCurve) {
      const { c } = p;
      if (this.grouped) {
        const hi = data.push(column(p, c.hi)) - 1;
        series.push({ label: `${c.label} max`, stroke: faint(c.color), width: 0.5, spanGaps: true });
        const lo = data.push(column(p, c.lo)) - 1;
        series.push({ label: `${c.label} min`, stroke: faint(c.color), width: 0.5, spanGaps: true });
        bands.push({ series: [hi, lo], fill: `${c.color}26` });
        data.push(column(p, ema(c.ys, w)));
        series.push({ label: `${c.label} mean`, stroke: c.color, width: 2, spanGaps: true });
      } else {
        if (w > 0) {
          data.push(column(p, c.ys));
          series.push({ label: `${c.label} (raw)`, stroke: faint(c.color), width: 1, spanGaps: true });
        }
        data.push(column(p, ema(c.ys, w)));
        series.push({ label: c.label, stroke: c.color, width: w > 0 ? 2 : 1.5, spanGaps: true });
      }
    }
    this.plot?.destroy();
    this.plot = null;
    this.body.replaceChildren();
    Object.assign(this.el.dataset, {
      mode: this.grouped ? "groups" : "runs", xAxis: axis, smoothing: String(w), logX: String(logX),
      logY: String(logY), series: String(series.length - 1), bands: String(bands.length), points: String(xs.length),
    });
    if (!this.curves.length) {
      this.body.append(h("p", { class: "msg" }, this.metricPick.value ? "No run on this page has this metric." : "No metric was logged more than once: nothing to draw as a curve."));
      this.el.dataset.state = "ready";
      this.meta.textContent = "";
      return;
    }
    this.plot = new uPlot({
      width: this.body.clientWidth || 800,
      height: HEIGHT,
      scales: { x: { time: axis === "wall", ...(logX ? { distr: 3 } : {}) }, y: logY ? { distr: 3 } : {} },
      legend: { show: true },
      axes: [
        axis === "wall" ? {} : { label: series[0].label as string, labelSize: 18, size: 36, values: (_u, t) => t.map(fmtNumber) },
        { size: 60, values: (_u, t) => t.map(fmtNumber) },
      ],
      series,
      bands,
    }, data as uPlot.AlignedData, this.body);
    (this.el as unknown as { uplot: uPlot }).uplot = this.plot;
    this.el.dataset.state = "ready";
    this.meta.textContent = this.grouped
      ? `${this.curves.length} groups · mean with min–max band over every point (server)`
      : `${this.curves.length} runs of this page`;
  }
}
