"""``Experiment``: a named group of runs, created on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runstream import checks
from runstream.run import Run

if TYPE_CHECKING:
    from runstream.workspace import Workspace


class Experiment:
    def __init__(self, workspace: "Workspace", name: str) -> None:
        self.workspace = workspace
        self.name = checks.name(name, "experiment name")

    def start_logging(self, *, name: str | None = None, **properties: Any) -> Run:
        """Start an interactive run (notebooks, scripts); keyword arguments become properties."""
        return Run._start(self, name=name, parent=None, kind="interactive", properties=properties)

    def get_runs(self, **filters: Any) -> list[Run]:
        """Top-level runs, newest first; ``filters`` are the API's query parameters."""
        params = {"parent": "none", "limit": 1000, **filters}
        runs = self.workspace._api.get(f"/experiments/{self.name}/runs", **params)["runs"]
        return [Run(self, r["run_id"], _name=r.get("name")) for r in runs]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"
