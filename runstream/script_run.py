"""The seed's option 2: ``ScriptRunConfig``, ``Environment`` and ``experiment.submit(config)``.

``submit`` snapshots ``source_directory`` (``snapshot.zip``), starts a ``submitted`` run and
runs the script in a subprocess on this machine: the current interpreter, or the
environment's ``python.interpreter_path`` (the seed's "user-managed environment"), with
``cwd = source_directory`` and the run handed over through environment variables. What
happens while it runs is :class:`runstream.supervisor.Supervisor`'s job.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstream import snapshot
from runstream.errors import RunstreamError
from runstream.run import Run
from runstream.schemas.limits import MAX_NAME_LENGTH, MAX_STRING_VALUE_LENGTH

if TYPE_CHECKING:
    from runstream.experiment import Experiment
    from runstream.supervisor import Supervisor

__all__ = ["Environment", "PythonSection", "RunConfiguration", "ScriptRunConfig", "ScriptRun", "submit"]

CANCEL_GRACE_S = 10.0
"""How long ``cancel()`` waits after SIGTERM before it sends SIGKILL."""


@dataclass
class PythonSection:
    """``environment.python``: which interpreter runs the script."""

    user_managed_dependencies: bool = False
    """Accepted for Azure ML compatibility. runstream never builds an environment: the script
    always runs with an existing interpreter, as if this were True."""
    interpreter_path: str | None = None
    """The interpreter to run the script with (a path, or a name on PATH); default: the
    interpreter running ``submit``."""


@dataclass
class Environment:
    """A named execution environment (the subset of Azure ML's that a local run needs)."""

    name: str
    python: PythonSection = field(default_factory=PythonSection)
    environment_variables: dict[str, str] = field(default_factory=dict)
    """Extra variables set for the script."""

    def interpreter(self) -> str:
        """The interpreter's absolute path, or a RunstreamError naming the setting."""
        wanted = self.python.interpreter_path
        if not wanted:
            return sys.executable
        found = shutil.which(wanted)
        if found is None:
            raise RunstreamError(f"environment {self.name!r}: python.interpreter_path={wanted!r} is not an "
                                 "executable file (nor a command on PATH)")
        return os.path.abspath(found)


@dataclass
class RunConfiguration:
    """``config.run_config``: where the seed sets ``run_config.environment = env``."""

    environment: Environment | None = None


class ScriptRunConfig:
    """What to run: ``script`` (relative to ``source_directory``) with ``arguments``, in
    ``environment`` (or ``run_config.environment``)."""

    def __init__(self, source_directory: str | os.PathLike[str], script: str,
                 arguments: Sequence[Any] | None = None, run_config: RunConfiguration | None = None,
                 environment: Environment | None = None) -> None:
        self.source_directory = str(source_directory)
        self.script = script
        self.arguments = [str(a) for a in (arguments or [])]
        self.run_config = run_config or RunConfiguration()
        if environment is not None:
            self.run_config.environment = environment

    @property
    def environment(self) -> Environment | None:
        return self.run_config.environment

    @environment.setter
    def environment(self, value: Environment | None) -> None:
        self.run_config.environment = value

    def resolve(self) -> tuple[Path, Path, str]:
        """``(source_directory, script, interpreter)`` checked, or a RunstreamError naming what is wrong."""
        root = Path(self.source_directory).resolve()
        if not root.is_dir():
            raise RunstreamError(f"ScriptRunConfig: source_directory {self.source_directory!r} is not a directory")
        if not isinstance(self.script, str) or not self.script:
            raise RunstreamError(f"ScriptRunConfig: script must be a file name in source_directory, not {self.script!r}")
        script = (root / self.script).resolve()
        if not script.is_relative_to(root):
            raise RunstreamError(f"ScriptRunConfig: script {self.script!r} is outside source_directory {str(root)!r}")
        if not script.is_file():
            raise RunstreamError(f"ScriptRunConfig: script {self.script!r} not found in source_directory {str(root)!r}")
        env = self.run_config.environment or Environment("default")
        return root, script, env.interpreter()

    def __repr__(self) -> str:
        return f"ScriptRunConfig(source_directory={self.source_directory!r}, script={self.script!r}, arguments={self.arguments!r})"


class ScriptRun(Run):
    """A submitted run, as ``experiment.submit`` returns it: ``cancel()`` stops the script."""

    _supervisor: Supervisor

    def cancel(self, grace_period_s: float = CANCEL_GRACE_S) -> None:
        """Stop the script (SIGTERM to its process group, SIGKILL after ``grace_period_s``)
        and return once the run is recorded as canceled."""
        self._supervisor.cancel(grace_period_s)

    @property
    def returncode(self) -> int | None:
        """The script's exit code once it has ended (negative: killed by that signal)."""
        return self._supervisor.returncode

    @property
    def pid(self) -> int:
        """The script's process id."""
        return self._supervisor.pid


def submit(experiment: Experiment, config: ScriptRunConfig, tags: dict[str, Any] | None = None) -> ScriptRun:
    """Snapshot, start the run, start the script; returns at once (see ``wait_for_completion``)."""
    from runstream.supervisor import Supervisor

    if not isinstance(config, ScriptRunConfig):
        raise RunstreamError(f"submit() takes a ScriptRunConfig, not {type(config).__name__}")
    root, script, interpreter = config.resolve()
    snap = snapshot.collect(root)
    # The relay's Unix socket lives here: keep its path short (sun_path holds ~100 bytes).
    workdir = Path(tempfile.mkdtemp(prefix="runstream-", dir=None if len(tempfile.gettempdir()) < 64 else "/tmp"))
    run: ScriptRun | None = None
    try:
        snapshot.write_zip(snap, workdir / snapshot.SNAPSHOT_ARTIFACT)
        env = config.run_config.environment
        properties = {
            "script": config.script,
            "arguments": shlex.join(config.arguments)[:MAX_STRING_VALUE_LENGTH],
            "source_directory": str(root)[:MAX_STRING_VALUE_LENGTH],
            "interpreter": interpreter[:MAX_STRING_VALUE_LENGTH],
            "environment": env.name if env is not None else "default",
        }
        started = ScriptRun._start(experiment, name=Path(config.script).name[:MAX_NAME_LENGTH], parent=None,
                                   kind="submitted", properties=properties)
        assert isinstance(started, ScriptRun)
        run = started
        if tags:
            run.set_tags(tags)
        run.upload_file(snapshot.SNAPSHOT_ARTIFACT, workdir / snapshot.SNAPSHOT_ARTIFACT)
        argv = [interpreter, str(script), *config.arguments]
        extra_env = dict(env.environment_variables) if env is not None else {}
        run._supervisor = Supervisor(run, argv, root, extra_env, workdir)
    except BaseException as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        if run is not None:  # started but never ran: do not leave it running forever
            Run.fail(run, f"submit failed before the script started: {exc!r}")
        raise
    run._supervisor.start()
    return run
