"""runstream: run history for machine learning, event-sourced on Kafka.

``from runstream import Workspace, Experiment, Run`` mirrors azureml.core's logging API.
"""

from runstream.errors import ApiError, ApiUnreachable, DeliveryError, LimitError, RunstreamError
from runstream.experiment import Experiment
from runstream.frames import search_runs
from runstream.run import Run
from runstream.script_run import Environment, RunConfiguration, ScriptRun, ScriptRunConfig
from runstream.workspace import Workspace

__all__ = ["Workspace", "Experiment", "Run", "ScriptRunConfig", "ScriptRun", "RunConfiguration", "Environment",
           "RunstreamError", "LimitError", "DeliveryError", "ApiError", "ApiUnreachable", "search_runs"]
