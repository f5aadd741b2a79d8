// "/compare?run=A&run=B…": each metric logged as a vector by any of the runs, overlaid on
// one chart (one series per run), and a table of every metric's final value per run.
import { api, enc, toFloat, type CompareRun, type Summary } from "../api";
import { OverlayChart, PALETTE } from "../charts";
import { h, link, message, section, statusBadge } from "../dom";
import { fmtValue, runLabel } from "../format";
import type { PageContext } from "../main";

function isVector(s: Summary | undefined): boolean {
  return !!s && (s.kind === "list" || (s.kind === "scalar" && s.count > 1));
}

export async function comparePage({ root, signal, params, crumbs }: PageContext): Promise<void> {
  const ids = [...new Set(params.getAll("run").flatMap((r) => r.split(",")).filter(Boolean))];
  document.title = "Compare runs · runstream";
  crumbs(link("/", "Experiments"), "Compare");
  if (!ids.length) {
    root.append(message("Choose runs to compare in an experiment's runs table (or add ?run=<id>&run=<id> to this URL)."));
    return;
  }
  root.append(message("Loading runs…"));
  // Summaries first; the vectors once the charts exist and their width is known.
  const { runs } = await api.compare(ids, {}, signal);
  const experiments = [...new Set(runs.map((r) => r.experiment))];
  if (experiments.length === 1) crumbs(link("/", "Experiments"), link(`/experiments/${enc(experiments[0])}`, experiments[0]), "Compare");

  const colors = new Map(runs.map((r, i) => [r.run_id, PALETTE[i % PALETTE.length]]));
  const names = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].sort();
  const vectorNames = names.filter((n) => runs.some((r) => isVector(r.metrics[n])));
  const valueNames = names.filter((n) => runs.some((r) => r.metrics[n] && r.metrics[n].kind !== "table" && r.metrics[n].kind !== "image"));

  const legend = h("ul", { class: "legend", id: "compare-runs" },
    runs.map((r) => h("li", { data: { runId: r.run_id } },
      h("span", { class: "swatch", style: `background:${colors.get(r.run_id)}` }),
      link(`/runs/${enc(r.run_id)}`, runLabel(r)), " ", statusBadge(r.status),
      experiments.length > 1 ? h("span", { class: "muted" }, ` ${r.experiment}`) : null)));

  const finals = h("table", { class: "grid", id: "final-values" },
    h("thead", null, h("tr", null, h("th", null, "Run"), valueNames.map((n) => h("th", { class: "num", data: { metric: n } }, n)))),
    h("tbody", null, runs.map((r: CompareRun) =>
      h("tr", { data: { runId: r.run_id } },
        h("td", null, h("span", { class: "swatch", style: `background:${colors.get(r.run_id)}` }), runLabel(r)),
        valueNames.map((n) => {
          const s = r.metrics[n];
          const v = s ? toFloat(s.last) : null;
          return h("td", { class: "num", data: { metric: n, value: v === null ? undefined : String(v) } }, s ? fmtValue(s.last) : "—");
        })))));

  const charts = h("div", { class: "charts", id: "compare-charts" });
  root.replaceChildren(
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h1", null, `Comparing ${runs.length} runs`)), legend),
    section("Final values", "final-section", valueNames.length ? h("div", { class: "table-scroll" }, finals) : message("No metric values.")),
    section("Metrics over steps", "overlay-section", vectorNames.length ? charts : message("None of these runs logged a metric more than once.")),
  );
  const overlays = vectorNames.map((name) => {
    const chart = new OverlayChart(name, runs.map((r) => ({ runId: r.run_id, label: runLabel(r), color: colors.get(r.run_id)! })), signal);
    charts.append(chart.el);
    return chart;
  });
  if (!overlays.length) return;
  const { runs: withVectors } = await api.compare(
    ids,
    { vectors: true, metric: vectorNames, max_points: overlays[0].maxPoints() },
    signal,
  );
  const vectors = new Map(withVectors.map((r) => [r.run_id, r.vectors ?? {}]));
  for (const chart of overlays) void chart.show(runs.map((r) => vectors.get(r.run_id)?.[chart.name] ?? null));
}
