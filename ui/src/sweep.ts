// Charts of a sweep's runs on the experiment page: a scatter of any two columns with the
// best run marked (uPlot), and parallel coordinates over the table's columns whose axis
// brushes become a search filter, so the table (and the CSV) follow the brush on the
// server (Apache ECharts: uPlot has no parallel coordinates; only the parts used are
// bundled).
import uPlot from "uplot";
import { ParallelChart as EParallelChart } from "echarts/charts";
import { ParallelComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";
import type { Run } from "./api";
import { PALETTE } from "./charts";
import { columnLabel, filterField, numericValue, type Column } from "./columns";
import { h, setChildren } from "./dom";
import { fmtNumber, runLabel } from "./format";

echarts.use([EParallelChart, ParallelComponent, CanvasRenderer]);

const HEIGHT = 300;
const BEST = "#f59e0b";

function picker(label: string, axis: string, onChange: () => void): HTMLSelectElement {
  return h("select", { attrs: { "aria-label": label }, data: { axis }, on: { change: onChange } });
}

function fillPicker(sel: HTMLSelectElement, columns: Column[], preferred: string | undefined): void {
  const keep = sel.value || preferred;
  setChildren(sel, columns.map((c) => h("option", { value: c.key }, columnLabel(c))));
  if (keep && columns.some((c) => c.key === keep)) sel.value = keep;
}

/** Two columns of the runs against each other; the best run (lowest y, or highest) marked. */
export class ScatterChart {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "chart-body" });
  private readonly meta = h("span", { class: "chart-meta" });
  private readonly xPick = picker("scatter x", "x", () => this.draw());
  private readonly yPick = picker("scatter y", "y", () => this.draw());
  private readonly goal: HTMLSelectElement;
  private plot: uPlot | null = null;
  private runs: Run[] = [];
  private columns: Column[] = [];

  constructor(signal: AbortSignal) {
    this.goal = h("select", { attrs: { "aria-label": "best is" }, on: { change: () => this.draw() } },
      h("option", { value: "min" }, "lowest y"), h("option", { value: "max" }, "highest y"));
    this.el = h("div", { class: "chart", id: "scatter", data: { state: "loading" } },
      h("div", { class: "chart-head" }, h("h3", null, "Scatter"), this.meta,
        h("label", { class: "pick" }, "x ", this.xPick), h("label", { class: "pick" }, "y ", this.yPick),
        h("label", { class: "pick" }, "best = ", this.goal)),
      this.body);
    signal.addEventListener("abort", () => this.plot?.destroy());
  }

  /** The runs to plot and the numeric columns to choose from; x/y default to ``x``/``y``. */
  set(runs: Run[], columns: Column[], x?: string, y?: string): void {
    this.runs = runs;
    this.columns = columns;
    fillPicker(this.xPick, columns, x);
    fillPicker(this.yPick, columns, y);
    this.draw();
  }

  private draw(): void {
    const x = this.columns.find((c) => c.key === this.xPick.value);
    const y = this.columns.find((c) => c.key === this.yPick.value);
    this.plot?.destroy();
    this.plot = null;
    if (!x || !y) {
      setChildren(this.body, h("p", { class: "msg" }, "Needs two numeric columns (metrics, params or tags)."));
      Object.assign(this.el.dataset, { state: "ready", points: "0" });
      return;
    }
    const pts = this.runs
      .map((r) => ({ r, x: numericValue(r, x), y: numericValue(r, y) }))
      .filter((p): p is { r: Run; x: number; y: number } => p.x !== null && p.y !== null)
      .sort((a, b) => a.x - b.x || a.y - b.y);
    const lowest = this.goal.value === "min";
    let best = -1;
    pts.forEach((p, i) => {
      if (best < 0 || (lowest ? p.y < pts[best].y : p.y > pts[best].y)) best = i;
    });
    const data: uPlot.AlignedData = [
      pts.map((p) => p.x),
      pts.map((p) => p.y),
      pts.map((p, i) => (i === best ? p.y : null)),
    ];
    const tip = h("div", { class: "tooltip", hidden: true });
    const noLine = () => null;
    this.body.replaceChildren();
    this.plot = new uPlot({
      width: this.body.clientWidth || 600,
      height: HEIGHT,
      scales: { x: { time: false } },
      legend: { show: false },
      axes: [
        { label: columnLabel(x), labelSize: 18, size: 36, values: (_u, t) => t.map(fmtNumber) },
        { label: columnLabel(y), labelSize: 18, size: 70, values: (_u, t) => t.map(fmtNumber) },
      ],
      series: [
        { label: columnLabel(x) },
        { label: columnLabel(y), stroke: PALETTE[0], paths: noLine, points: { show: true, size: 8, fill: PALETTE[0] } },
        { label: "best", stroke: "#b45309", paths: noLine, points: { show: true, size: 16, width: 2, fill: BEST } },
      ],
      cursor: { drag: { x: false, y: false } },
      hooks: {
        ready: [(u) => u.over.appendChild(tip)],
        setCursor: [(u) => {
          const idx = u.cursor.idx;
          if (idx === null || idx === undefined || !pts[idx]) {
            tip.hidden = true;
            return;
          }
          const p = pts[idx];
          setChildren(tip, [runLabel(p.r), `${columnLabel(x)} = ${fmtNumber(p.x)}`, `${columnLabel(y)} = ${fmtNumber(p.y)}`,
            idx === best ? "★ best" : null].filter(Boolean).map((t) => h("div", null, t)));
          tip.hidden = false;
          tip.style.left = `${(u.cursor.left ?? 0) + 12}px`;
          tip.style.top = `${Math.max(0, (u.cursor.top ?? 0) - 10)}px`;
        }],
      },
    }, data, this.body);
    (this.el as unknown as { uplot: uPlot }).uplot = this.plot;
    const b = pts[best];
    this.meta.textContent = b
      ? `${pts.length} runs · ★ best: ${runLabel(b.r)} (${columnLabel(y)} = ${fmtNumber(b.y)}, ${columnLabel(x)} = ${fmtNumber(b.x)})`
      : "no run has both values";
    Object.assign(this.el.dataset, {
      state: "ready", points: String(pts.length), x: x.key, y: y.key,
      bestRunId: b ? b.r.run_id : "", bestX: b ? String(b.x) : "", bestY: b ? String(b.y) : "",
    });
  }
}

/** Parallel coordinates over numeric columns; dragging along an axis brushes a range,
 * and ``onBrush`` gets the brushes as a search-language filter ("" when none). */
export class ParallelChart {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "chart-body parallel-body" });
  private readonly meta = h("span", { class: "chart-meta" });
  private chart: echarts.ECharts | null = null;
  private columns: Column[] = [];
  private intervals = new Map<string, number[][]>();
  private timer: number | null = null;

  constructor(signal: AbortSignal, private readonly onBrush: (filter: string) => void) {
    const clear = h("button", { class: "small", id: "clear-brush", on: { click: () => this.clear() } }, "Clear brush");
    this.el = h("div", { class: "chart", id: "parallel", data: { state: "loading" } },
      h("div", { class: "chart-head" }, h("h3", null, "Parallel coordinates"), this.meta, clear), this.body);
    const resize = new ResizeObserver(() => this.chart?.resize());
    resize.observe(this.body);
    signal.addEventListener("abort", () => {
      resize.disconnect();
      this.chart?.dispose();
    });
  }

  set(runs: Run[], columns: Column[]): void {
    this.columns = columns;
    this.intervals.clear();
    this.chart?.dispose();
    this.chart = null;
    this.body.replaceChildren();
    const rows = runs.map((r) => columns.map((c) => numericValue(r, c)));
    Object.assign(this.el.dataset, { state: "ready", axes: String(columns.length), lines: String(runs.length), brushed: "" });
    if (columns.length < 2) {
      this.body.append(h("p", { class: "msg" }, "Choose two or more numeric columns to compare them here."));
      this.meta.textContent = "";
      return;
    }
    this.meta.textContent = `${runs.length} runs · drag along an axis to filter the table`;
    const chart = echarts.init(this.body, undefined, { renderer: "canvas", height: HEIGHT });
    chart.setOption({
      animation: false,
      parallel: { left: 40, right: 80, top: 40, bottom: 24 },
      parallelAxis: columns.map((c, dim) => ({
        dim, id: c.key, name: columnLabel(c), type: "value", scale: true, nameTextStyle: { fontSize: 11 },
      })),
      series: [{
        type: "parallel",
        lineStyle: { width: 1.5, opacity: 0.6, color: PALETTE[0] },
        inactiveOpacity: 0.08,
        activeOpacity: 1,
        data: rows.map((row, i) => ({ value: row.map((v) => (v === null ? "-" : v)), name: runLabel(runs[i]) })),
      }],
    });
    chart.on("axisareaselected", (e: unknown) => this.brushed(e as { parallelAxisId?: unknown; intervals?: number[][] }));
    this.chart = chart;
    (this.el as unknown as { echarts: echarts.ECharts }).echarts = chart;
  }

  private brushed(e: { parallelAxisId?: unknown; intervals?: number[][] }): void {
    if (typeof e.parallelAxisId !== "string") return; // clear() dispatches for every axis at once
    if (e.intervals && e.intervals.length) this.intervals.set(e.parallelAxisId, e.intervals);
    else this.intervals.delete(e.parallelAxisId);
    // A drag reports its interval at every mouse move: filter the table once it settles.
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => {
      this.timer = null;
      this.emit();
    }, 250);
  }

  /** The brushes in the search language: each axis a range (or ranges), all axes must hold. */
  filter(): string {
    const parts: string[] = [];
    for (const c of this.columns) {
      const ranges = this.intervals.get(c.key);
      const field = filterField(c);
      if (!ranges || !field) continue;
      const alt = ranges.map(([lo, hi]) => `${field} >= ${lo} and ${field} <= ${hi}`);
      parts.push(alt.length > 1 ? `(${alt.join(" or ")})` : alt[0]);
    }
    return parts.join(" and ");
  }

  private emit(): void {
    const f = this.filter();
    this.el.dataset.brushed = f;
    this.onBrush(f);
  }

  clear(): void {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    this.intervals.clear();
    this.chart?.dispatchAction({ type: "axisAreaSelect", parallelAxisId: this.columns.map((c) => c.key), intervals: [] });
    this.emit();
  }
}
