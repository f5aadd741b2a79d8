// Charts on uPlot: one run's vector, several runs' vectors overlaid, and a table's two
// columns. Vector charts ask the API for at most as many points as the chart is wide
// (max_points), and a drag-zoom asks again for the zoomed step range, so a 1M-point
// metric draws about a thousand points at any zoom. Double-click zooms back out.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, toNumber, type Value, type Vector } from "./api";
import { h, inert, setChildren, type Child } from "./dom";
import { fmtNumber, fmtTime, fmtValue } from "./format";

export const PALETTE = [
  "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c",
  "#0891b2", "#c026d3", "#65a30d", "#b45309", "#475569",
];
const HEIGHT = 240;
const MAX_POINTS_CAP = 100_000;

type Range = [number, number];

/** max_points for a chart body: its width in CSS pixels, within the API's bounds. */
export function pointsFor(body: HTMLElement): number {
  const width = body.clientWidth || 800;
  return Math.max(4, Math.min(MAX_POINTS_CAP, Math.round(width)));
}

function yAxisSize(_u: uPlot, values: string[] | null): number {
  const longest = values ? Math.max(...values.map((v) => v.length)) : 4;
  return Math.max(40, longest * 7 + 18);
}

/** Tick spacings for an axis of steps: whole numbers only. */
const STEP_INCRS = Array.from({ length: 19 }, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();

interface PlotSpec {
  body: HTMLElement;
  xLabel: string;
  /** The x values are steps (integers). */
  steps?: boolean;
  /** A logarithmic y axis (every value must be > 0). */
  logY?: boolean;
  series: { label: string; color: string; points?: boolean }[];
  data: uPlot.AlignedData;
  /** Tooltip lines for data index ``idx`` (null hides it). */
  tooltip: (u: uPlot, idx: number) => Child[] | null;
  onZoom?: (range: Range) => void;
  onReset?: () => void;
}

function makePlot(spec: PlotSpec): uPlot {
  const tip = h("div", { class: "tooltip", hidden: true });
  const opts: uPlot.Options = {
    width: spec.body.clientWidth || 800,
    height: HEIGHT,
    scales: { x: { time: false }, y: spec.logY ? { distr: 3 } : {} },
    legend: { show: spec.series.length > 1 },
    axes: [
      { label: spec.xLabel, labelSize: 18, size: 36, ...(spec.steps ? { incrs: STEP_INCRS } : {}) },
      { size: yAxisSize, values: (_u, ticks) => ticks.map((t) => fmtNumber(t)) },
    ],
    series: [
      { label: spec.xLabel },
      ...spec.series.map((s) => ({
        label: inert(s.label),
        stroke: s.color,
        width: 1.5,
        spanGaps: true,
        points: { show: s.points ?? false, size: 5, fill: s.color },
      })),
    ],
    cursor: {
      drag: { x: true, y: false, setScale: !spec.onZoom },
      bind: spec.onReset
        ? {
            dblclick: () => () => {
              spec.onReset?.();
              return null;
            },
          }
        : {},
    },
    hooks: {
      ready: [(u) => u.over.appendChild(tip)],
      setCursor: [
        (u) => {
          const idx = u.cursor.idx;
          const lines = idx === null || idx === undefined ? null : spec.tooltip(u, idx);
          if (!lines || u.cursor.left === undefined || u.cursor.left < 0) {
            tip.hidden = true;
            return;
          }
          setChildren(tip, lines.map((line) => h("div", null, line)));
          tip.hidden = false;
          const left = u.cursor.left ?? 0;
          const top = u.cursor.top ?? 0;
          const flip = left > u.over.clientWidth / 2;
          tip.style.left = flip ? "" : `${left + 12}px`;
          tip.style.right = flip ? `${u.over.clientWidth - left + 12}px` : "";
          tip.style.top = `${Math.max(0, top - 10)}px`;
        },
      ],
      setSelect: spec.onZoom
        ? [
            (u) => {
              const { left, width } = u.select;
              if (width < 3) return;
              const lo = u.posToVal(left, "x");
              const hi = u.posToVal(left + width, "x");
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              spec.onZoom?.([Math.max(0, Math.floor(lo)), Math.max(0, Math.ceil(hi))]);
            },
          ]
        : [],
    },
  };
  const plot = new uPlot(opts, spec.data, spec.body);
  const resize = new ResizeObserver(() => {
    const width = spec.body.clientWidth;
    if (width > 0 && Math.abs(width - plot.width) > 2) plot.setSize({ width, height: HEIGHT });
  });
  resize.observe(spec.body);
  plot.hooks.destroy = [...(plot.hooks.destroy ?? []), () => resize.disconnect()];
  return plot;
}

interface ChartParts {
  el: HTMLElement;
  body: HTMLElement;
  meta: HTMLElement;
  reset: HTMLButtonElement;
}

function chartCard(title: string, data: Record<string, string>, onReset: () => void, ...head: Child[]): ChartParts {
  const meta = h("span", { class: "chart-meta" });
  const reset = h("button", { class: "small", hidden: true, on: { click: onReset } }, "Reset zoom");
  const body = h("div", { class: "chart-body" });
  const el = h(
    "div",
    { class: "chart", data: { ...data, state: "loading" } },
    h("div", { class: "chart-head" }, h("h3", null, title), meta, ...head, reset),
    body,
  );
  return { el, body, meta, reset };
}

/** One metric of one run over its steps, with live appends. */
export class VectorChart {
  readonly el: HTMLElement;
  private readonly parts: ChartParts;
  private plot: uPlot | null = null;
  private steps: number[] = [];
  private values: Value[] = [];
  private times: number[] = [];
  private count = 0;
  private downsampled = false;
  private zoom: Range | null = null;
  private loading: Promise<void> | null = null;
  private pending: { steps: number[]; values: Value[]; times: number[] }[] = [];
  private reloadTimer: number | null = null;
  private readonly logBox: HTMLInputElement;

  constructor(
    private readonly runId: string,
    readonly name: string,
    private readonly signal: AbortSignal,
  ) {
    this.logBox = h("input", {
      type: "checkbox",
      on: {
        change: () => {
          this.plot?.destroy(); // the axis kind is fixed when a uPlot is made
          this.plot = null;
          this.draw();
        },
      },
    });
    this.parts = chartCard(name, { metric: name }, () => void this.load(null),
      h("label", { class: "pick", title: "logarithmic y axis (values > 0 only)" }, this.logBox, " log"),
      h("a", {
        class: "small csv", href: `/api/runs/${encodeURIComponent(runId)}/metrics.csv?name=${encodeURIComponent(name)}`,
        title: "every point as CSV", attrs: { download: "" },
      }, "CSV"));
    this.el = this.parts.el;
    signal.addEventListener("abort", () => this.destroy());
  }

  /** Fetch the vector for ``range`` (null = every step) at the chart's width, then draw. */
  load(range: Range | null): Promise<void> {
    const run = async () => {
      const maxPoints = pointsFor(this.parts.body);
      this.el.dataset.state = "loading";
      const query = { max_points: maxPoints, from_step: range?.[0], to_step: range?.[1] };
      try {
        const v = await api.vector(this.runId, this.name, query, this.signal);
        this.zoom = range;
        this.set(v);
        this.el.dataset.maxPoints = String(maxPoints);
      } catch (err) {
        if (this.signal.aborted) return;
        this.el.dataset.state = "error";
        this.parts.meta.textContent = `could not load: ${(err as Error).message}`;
      }
    };
    const p = (this.loading ?? Promise.resolve()).then(run);
    this.loading = p;
    void p.then(() => {
      if (this.loading === p) this.loading = null;
      this.flushPending();
    });
    return p;
  }

  /** Points that arrived live (deduplicated by step against what is drawn). */
  append(steps: number[], values: Value[], times: number[]): void {
    this.pending.push({ steps, values, times });
    if (!this.loading) this.flushPending();
  }

  private flushPending(): void {
    if (this.loading || !this.pending.length) return;
    const batches = this.pending.splice(0);
    if (this.zoom) {
      // The view is a zoomed step range: keep it, but count what arrived.
      this.count += batches.reduce((n, b) => n + b.steps.length, 0);
      this.updateMeta();
      return;
    }
    let added = 0;
    let outOfOrder = false;
    for (const b of batches) {
      for (let i = 0; i < b.steps.length; i++) {
        const last = this.steps.length ? this.steps[this.steps.length - 1] : -1;
        if (b.steps[i] > last) {
          this.steps.push(b.steps[i]);
          this.values.push(b.values[i]);
          this.times.push(b.times[i]);
          added++;
        } else if (!this.downsampled && b.steps[i] < last) {
          outOfOrder = true;
        }
      }
    }
    if (!added && !outOfOrder) return;
    this.count += added;
    this.draw();
    if (outOfOrder || this.steps.length > 2 * pointsFor(this.parts.body)) this.scheduleReload();
  }

  private scheduleReload(): void {
    if (this.reloadTimer !== null) return;
    this.reloadTimer = window.setTimeout(() => {
      this.reloadTimer = null;
      if (!this.signal.aborted) void this.load(this.zoom);
    }, 1000);
  }

  private set(v: Vector): void {
    this.steps = v.steps.slice();
    this.values = v.values.slice();
    this.times = v.times.slice();
    this.count = v.count;
    this.downsampled = v.downsampled;
    this.draw();
  }

  private draw(): void {
    const el = this.el;
    const textual = this.values.some((x) => typeof x === "string");
    if (textual) {
      this.plot?.destroy();
      this.plot = null;
      setChildren(this.parts.body, textList(this.steps, this.values));
    } else {
      const ys = this.values.map(toNumber);
      const positive = ys.every((y) => y === null || y > 0);
      this.logBox.disabled = !positive;
      if (this.logBox.checked && !positive) {
        this.logBox.checked = false;
        this.plot?.destroy();
        this.plot = null;
      }
      const data: uPlot.AlignedData = [this.steps, ys];
      if (this.plot) this.plot.setData(data);
      else {
        this.parts.body.replaceChildren();
        this.plot = makePlot({
          body: this.parts.body,
          xLabel: "step",
        steps: true,
          series: [{ label: this.name, color: PALETTE[0], points: this.steps.length < 60 }],
          logY: this.logBox.checked,
          data,
          tooltip: (_u, idx) => [
            `step ${this.steps[idx]}`,
            `${this.name} = ${fmtValue(this.values[idx])}`,
            fmtTime(this.times[idx], true),
          ],
          onZoom: (range) => void this.load(range),
          onReset: () => void this.load(null),
        });
        (el as unknown as { uplot: uPlot }).uplot = this.plot;
      }
    }
    el.dataset.points = String(this.steps.length);
    el.dataset.count = String(this.count);
    el.dataset.downsampled = String(this.downsampled);
    el.dataset.zoomed = String(this.zoom !== null);
    el.dataset.state = "ready";
    this.parts.reset.hidden = this.zoom === null;
    this.updateMeta();
  }

  private updateMeta(): void {
    const range = this.zoom ? ` · steps ${this.zoom[0]}–${this.zoom[1]}` : "";
    const shown = this.downsampled ? ` (${this.steps.length} drawn)` : "";
    this.parts.meta.textContent = `${this.count.toLocaleString()} points${shown}${range}`;
  }

  destroy(): void {
    if (this.reloadTimer !== null) window.clearTimeout(this.reloadTimer);
    this.plot?.destroy();
    this.plot = null;
  }
}

function textList(steps: number[], values: Value[]): HTMLElement {
  const rows = steps.slice(-200).map((s, i) => h("tr", null, h("td", { class: "num" }, s), h("td", null, fmtValue(values[values.length - Math.min(200, steps.length) + i]))));
  return h("table", { class: "grid small" }, h("thead", null, h("tr", null, h("th", null, "step"), h("th", null, "value"))), h("tbody", null, rows));
}

export interface OverlayRun {
  runId: string;
  label: string;
  color: string;
}

/** One metric of several runs on one chart, aligned on step. */
export class OverlayChart {
  readonly el: HTMLElement;
  private readonly parts: ChartParts;
  private plot: uPlot | null = null;
  private vectors: (Vector | null)[] = [];
  private zoom: Range | null = null;

  constructor(
    readonly name: string,
    private readonly runs: OverlayRun[],
    private readonly signal: AbortSignal,
  ) {
    this.parts = chartCard(name, { metric: name, runs: String(runs.length) }, () => void this.load(null));
    this.el = this.parts.el;
    signal.addEventListener("abort", () => this.plot?.destroy());
  }

  /** max_points for this chart: its width in pixels. */
  maxPoints(): number {
    return pointsFor(this.parts.body);
  }

  /** Draw vectors already fetched (one per run, in order; null where a run lacks it). */
  show(vectors: (Vector | null)[]): void {
    this.vectors = vectors;
    this.zoom = null;
    this.draw();
  }

  /** Fetch every run's vector for ``range`` (null = all steps) at the chart's width. */
  async load(range: Range | null): Promise<void> {
    const maxPoints = this.maxPoints();
    this.el.dataset.state = "loading";
    try {
      this.vectors = await Promise.all(
        this.runs.map(async (r) => {
          const query = { max_points: maxPoints, from_step: range?.[0], to_step: range?.[1] };
          try {
            return await api.vector(r.runId, this.name, query, this.signal);
          } catch {
            return null; // this run has no such metric (in range)
          }
        }),
      );
    } catch (err) {
      if (this.signal.aborted) return;
      this.el.dataset.state = "error";
      this.parts.meta.textContent = `could not load: ${(err as Error).message}`;
      return;
    }
    if (this.signal.aborted) return;
    this.zoom = range;
    this.draw();
  }

  private draw(): void {
    const steps = [...new Set(this.vectors.flatMap((v) => v?.steps ?? []))].sort((a, b) => a - b);
    const index = new Map(steps.map((s, i) => [s, i]));
    const columns = this.vectors.map((v) => {
      const col: (number | null)[] = new Array(steps.length).fill(null);
      v?.steps.forEach((s, i) => (col[index.get(s)!] = toNumber(v.values[i])));
      return col;
    });
    const raw = this.vectors.map((v) => {
      const m = new Map<number, Value>();
      v?.steps.forEach((s, i) => m.set(s, v.values[i]));
      return m;
    });
    const data: uPlot.AlignedData = [steps, ...columns];
    if (this.plot) this.plot.setData(data);
    else {
      this.parts.body.replaceChildren();
      this.plot = makePlot({
        body: this.parts.body,
        xLabel: "step",
        steps: true,
        series: this.runs.map((r) => ({ label: r.label, color: r.color, points: steps.length < 60 })),
        data,
        tooltip: (_u, idx) => [
          `step ${steps[idx]}`,
          ...this.runs.map((r, i) => `${r.label}: ${raw[i].has(steps[idx]) ? fmtValue(raw[i].get(steps[idx])) : "—"}`),
        ],
        onZoom: (range) => void this.load(range),
        onReset: () => void this.load(null),
      });
      (this.el as unknown as { uplot: uPlot }).uplot = this.plot;
    }
    const counts = this.vectors.map((v) => v?.steps.length ?? 0);
    this.el.dataset.points = counts.join(",");
    this.el.dataset.series = String(counts.filter((n) => n > 0).length);
    this.el.dataset.zoomed = String(this.zoom !== null);
    this.el.dataset.state = "ready";
    this.parts.reset.hidden = this.zoom === null;
    const downsampled = this.vectors.some((v) => v?.downsampled);
    this.parts.meta.textContent = `${counts.filter((n) => n > 0).length} runs${downsampled ? " · downsampled" : ""}`;
  }
}

/** Two columns of a table (log_row / log_table) against each other, with column pickers. */
export class TableChart {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly meta: HTMLElement;
  private readonly xPick: HTMLSelectElement;
  private readonly yPick: HTMLSelectElement;
  private plot: uPlot | null = null;
  private columns: Record<string, Value[]> = {};
  private rows = 0;

  static readonly ROW = "(row)";

  constructor(
    readonly name: string,
    signal: AbortSignal,
  ) {
    this.xPick = h("select", { attrs: { "aria-label": "x column" }, data: { axis: "x" }, on: { change: () => this.draw() } });
    this.yPick = h("select", { attrs: { "aria-label": "y column" }, data: { axis: "y" }, on: { change: () => this.draw() } });
    this.meta = h("span", { class: "chart-meta" });
    this.body = h("div", { class: "chart-body" });
    this.el = h(
      "div",
      { class: "chart", data: { table: name, state: "loading" } },
      h("div", { class: "chart-head" }, h("h3", null, name), this.meta,
        h("label", { class: "pick" }, "x ", this.xPick), h("label", { class: "pick" }, "y ", this.yPick)),
      this.body,
    );
    signal.addEventListener("abort", () => this.plot?.destroy());
  }

  set(columns: Record<string, Value[]>, rows: number): void {
    this.columns = columns;
    this.rows = rows;
    const numeric = Object.keys(columns).filter((c) => columns[c].some((v) => toNumber(v) !== null));
    const keepX = this.xPick.value;
    const keepY = this.yPick.value;
    setChildren(this.xPick, [TableChart.ROW, ...numeric].map((c) => h("option", { value: c }, c)));
    setChildren(this.yPick, numeric.map((c) => h("option", { value: c }, c)));
    const defaultX = numeric.length >= 2 ? numeric[0] : TableChart.ROW;
    const defaultY = numeric.length >= 2 ? numeric[1] : numeric[0];
    this.xPick.value = keepX && [TableChart.ROW, ...numeric].includes(keepX) ? keepX : defaultX;
    this.yPick.value = keepY && numeric.includes(keepY) ? keepY : (defaultY ?? "");
    this.draw();
  }

  private draw(): void {
    const x = this.xPick.value;
    const y = this.yPick.value;
    this.el.dataset.x = x;
    this.el.dataset.y = y;
    if (!y) {
      this.plot?.destroy();
      this.plot = null;
      setChildren(this.body, h("p", { class: "msg" }, "No numeric column to plot."));
      this.el.dataset.points = "0";
      this.el.dataset.state = "ready";
      return;
    }
    const xs = x === TableChart.ROW ? Array.from({ length: this.rows }, (_, i) => i) : this.columns[x].map(toNumber);
    const ys = this.columns[y].map(toNumber);
    const pairs: [number, number | null][] = [];
    xs.forEach((xv, i) => {
      if (xv !== null && xv !== undefined && i < ys.length) pairs.push([xv, ys[i]]);
    });
    pairs.sort((a, b) => a[0] - b[0]); // uPlot draws along ascending x
    const data: uPlot.AlignedData = [pairs.map((p) => p[0]), pairs.map((p) => p[1])];
    this.plot?.destroy();
    this.body.replaceChildren();
    const xCol = x === TableChart.ROW ? null : this.columns[x];
    const yCol = this.columns[y];
    const order = xs.map((_, i) => i).filter((i) => xs[i] !== null).sort((a, b) => (xs[a] as number) - (xs[b] as number));
    this.plot = makePlot({
      body: this.body,
      xLabel: x,
      series: [{ label: y, color: PALETTE[2], points: pairs.length < 200 }],
      data,
      tooltip: (_u, idx) => {
        const row = order[idx];
        return [`row ${row}`, `${x} = ${xCol ? fmtValue(xCol[row]) : row}`, `${y} = ${fmtValue(yCol[row])}`];
      },
    });
    (this.el as unknown as { uplot: uPlot }).uplot = this.plot;
    this.el.dataset.points = String(pairs.filter((p) => p[1] !== null).length);
    this.el.dataset.state = "ready";
    this.meta.textContent = `${this.rows.toLocaleString()} rows`;
  }
}
