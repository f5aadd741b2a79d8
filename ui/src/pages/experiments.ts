// "/": every experiment with its run count and last activity.
import { api, enc } from "../api";
import { h, link, message } from "../dom";
import { fmtTime } from "../format";
import type { PageContext } from "../main";

export async function experimentsPage({ root, signal, crumbs }: PageContext): Promise<void> {
  document.title = "Experiments · runstream";
  crumbs("Experiments");
  root.append(message("Loading experiments…"));
  const { experiments } = await api.experiments(signal);
  // Most recently active first: that is the one a person is usually looking for.
  experiments.sort((a, b) => (b.last_activity ?? "").localeCompare(a.last_activity ?? "") || a.name.localeCompare(b.name));
  const filter = h("input", {
    type: "search",
    placeholder: "Filter by name",
    attrs: { "aria-label": "filter experiments" },
  });
  const rows = experiments.map((e) =>
    h(
      "tr",
      { data: { experiment: e.name } },
      h("td", null, link(`/experiments/${enc(e.name)}`, e.name)),
      h("td", { class: "num", data: { runCount: e.run_count } }, e.run_count.toLocaleString()),
      h("td", null, fmtTime(e.last_activity)),
      h("td", null, fmtTime(e.created_at)),
    ),
  );
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    experiments.forEach((e, i) => (rows[i].hidden = !e.name.toLowerCase().includes(q)));
  });
  root.replaceChildren(
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h1", null, "Experiments"), h("span", { class: "muted" }, `${experiments.length}`), filter),
      experiments.length
        ? h(
            "table",
            { class: "grid", id: "experiments" },
            h("thead", null, h("tr", null, h("th", null, "Experiment"), h("th", { class: "num" }, "Runs"),
              h("th", null, "Last activity"), h("th", null, "Created"))),
            h("tbody", null, rows),
          )
        : message("No experiments yet. Log a run with the SDK (or `make demo`) and it appears here."),
    ),
  );
}
