"""``Experiment``: a named group of runs, created on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runstream import checks
from runstream.run import Run

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas

    from runstream.script_run import ScriptRun, ScriptRunConfig
    from runstream.workspace import Workspace


class Experiment:
    """A named group of runs of a workspace (``Experiment(workspace=ws, name=...)``)."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = checks.name(name, "experiment name")

    def start_logging(self, *, name: str | None = None, log_system_metrics: bool = False, **properties: Any) -> Run:
        """Start an interactive run (notebooks, scripts); keyword arguments become properties.
        ``log_system_metrics=True`` samples CPU, memory, disk, network and GPUs into
        ``system/*`` metrics every ``settings.system_metrics_interval`` seconds until the run
        ends (:mod:`runstream.sysmetrics`)."""
        run = Run._start(self, name=name, parent=None, kind="interactive", properties=properties)
        if log_system_metrics:
            from runstream.sysmetrics import SystemMetrics

            run._system_metrics = SystemMetrics.start_for(run, self.workspace.settings.system_metrics_interval)
        return run

    def submit(self, config: ScriptRunConfig, tags: dict[str, Any] | None = None) -> ScriptRun:
        """Run ``config``'s script in a subprocess as a new ``submitted`` run and return it at
        once: its source folder is uploaded as ``snapshot.zip``, its output streamed as log
        lines, its ``./outputs`` uploaded at the end, its status set by its exit code.
        Inside the script, ``Run.get_context()`` is this run."""
        from runstream.script_run import submit

        return submit(self, config, tags)

    def get_runs(self, **filters: Any) -> list[Run]:
        """Top-level runs, newest first; ``filters`` are the API's query parameters."""
        params = {"parent": "none", "limit": 1000, **filters}
        runs = self.workspace._api.get(f"/experiments/{quote(self.name, safe='')}/runs", **params)["runs"]
        return [Run(self, r["run_id"], _name=r.get("name")) for r in runs]

    def search_runs(self, filter_string: str = "", order_by: str | Sequence[str] | None = None,
                    max_results: int | None = None) -> pandas.DataFrame:
        """This experiment's runs (children too) matching ``filter_string`` as a pandas
        DataFrame: :func:`runstream.search_runs` for this experiment (``get_runs`` keeps
        Azure ML's list of :class:`Run`)."""
        from runstream.frames import search_runs

        return search_runs([self.name], filter_string, order_by, max_results, workspace=self.workspace)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"
