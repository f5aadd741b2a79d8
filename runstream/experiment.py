"""``Experiment``: a named group of runs, created on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runstream import checks
from runstream.run import Run

if TYPE_CHECKING:
    from runstream.script_run import ScriptRun, ScriptRunConfig
    from runstream.workspace import Workspace


class Experiment:
    """A named group of runs of a workspace (``Experiment(workspace=ws, name=...)``)."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = checks.name(name, "experiment name")

    def start_logging(self, *, name: str | None = None, **properties: Any) -> Run:
        """Start an interactive run (notebooks, scripts); keyword arguments become properties."""
        return Run._start(self, name=name, parent=None, kind="interactive", properties=properties)

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

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"
