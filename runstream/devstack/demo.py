"""The seed's example, end to end: a Ridge sweep on the diabetes data.

``runstream demo`` starts Kafka and PostgreSQL, runs the processors, gateway and query
API, then does the seed's option 2: ``examples/seed_option2`` (``train.py`` + ``mylib.py``)
submitted with ``ScriptRunConfig`` in a user-managed environment, one child run per
alpha, its output streamed live, its models uploaded from ``./outputs``. Then it asks the
API for the best child run by mse. (The seed's option 1, one ``start_logging`` run per
alpha, is examples/seed_option1.py; the tests run it as tests/support/sweep.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from runstream import localstack
from runstream.settings import Settings
from runstream.workspace import Workspace

if TYPE_CHECKING:
    from runstream.script_run import ScriptRun

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # runstream/devstack/demo.py -> the checkout
"""The repository's examples (the demo runs from a source checkout)."""
LOCAL_STACK_SETTINGS = ("kafka_bootstrap", "database_url", "api_database_url", "blob_dir", "api_url", "ingest_url",
                        "token")
"""What the demo records in ``~/.runstream/config.json`` for clients (``runstream.localstack``)."""


def submit_option2(ws: Workspace, experiment_name: str, source_directory: str | os.PathLike[str],
                   show_output: bool = True) -> ScriptRun:
    """Option 2 of the seed, steps 3 and 4 as the seed writes them: submit ``train.py`` from
    ``source_directory`` in a user-managed environment and wait for it."""
    from runstream import Environment, Experiment, ScriptRunConfig

    # Editing a run configuration property on-fly.
    user_managed_env = Environment("user-managed-env")

    user_managed_env.python.user_managed_dependencies = True

    # You can choose a specific Python environment by pointing to a Python path
    #user_managed_env.python.interpreter_path = '/home/johndoe/miniconda3/envs/myenv/bin/python'

    exp = Experiment(workspace=ws, name=experiment_name)
    src = ScriptRunConfig(source_directory=str(source_directory), script='train.py')
    src.run_config.environment = user_managed_env
    run = exp.submit(src)
    run.wait_for_completion(show_output=show_output)
    return run


def copy_example(name: str, target: Path) -> Path:
    """A fresh copy of ``examples/<name>`` in ``target`` (the script writes ``./outputs`` there)."""
    source = EXAMPLES / name
    if not source.is_dir():
        raise FileNotFoundError(f"{source} not found: the demo runs from a runstream source checkout")
    return Path(shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("outputs", "__pycache__")))


def best_run(api_url: str, experiment_name: str, parent_run_id: str | None = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The run with the lowest mse, as the query API orders it (among ``parent_run_id``'s children)."""
    url = f"{api_url}/api/experiments/{experiment_name}/runs?order_by=metric:mse&order=asc&limit=1"
    if parent_run_id is not None:
        url += f"&parent={parent_run_id}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
        return orjson.loads(resp.read())["runs"][0]  # type: ignore[no-any-return]


def wait_ready(settings: Settings, process: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    """Wait until the query API is ready and the gateway answers (``runstream serve`` is up)."""
    urls = [f"{settings.api_url}/api/ready", f"{settings.ingest_url}/api/v1/health"]
    deadline = time.monotonic() + deadline_s
    while urls and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runstream serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(urls[0], timeout=2) as resp:
                if resp.status == 200:
                    urls.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.1)  # poll interval while waiting for the condition above
    if urls:
        raise RuntimeError(f"{urls[0]} not ready after {deadline_s} s")


def main(state_dir: Path, keep_running: bool = True) -> None:
    """Run the demo; with ``keep_running`` the services stay up so the printed UI URL works
    (``runstream services down`` stops them, the background ``serve`` included)."""
    from runstream import devstack

    started = time.monotonic()
    stop_background_serve(state_dir)
    info = devstack.up(state_dir, fresh=False)
    api_port, gateway_port = _ports()
    settings = replace(
        Settings.from_env(),
        kafka_bootstrap=info.kafka_bootstrap, database_url=info.database_url,
        api_database_url=info.api_database_url, blob_dir=str(state_dir / "blobs"), api_port=api_port, gateway_port=gateway_port,
        api_url=f"http://127.0.0.1:{api_port}", ingest_url=f"http://127.0.0.1:{gateway_port}",
    )
    server = start_background_serve(state_dir, settings)
    try:
        wait_ready(settings, server)
        if settings.auth.strip().lower() != "off":  # as `serve` runs them: authentication on
            settings = replace(settings, token=create_token(settings.database_url))
        if keep_running:  # a plain Workspace() in another shell finds these services
            recorded = {k: getattr(settings, k) for k in LOCAL_STACK_SETTINGS}
            localstack.write(state_dir, {**recorded, "blob_dir": str(Path(settings.blob_dir).resolve())})
        ready = time.monotonic()
        experiment = f"train-on-local-{time.strftime('%Y%m%d-%H%M%S')}"
        ws = Workspace(settings=settings)
        with tempfile.TemporaryDirectory() as work:
            source = copy_example("seed_option2", Path(work))
            print(f"submitting {source / 'train.py'} (seed option 2) to experiment {experiment}\n", flush=True)
            run = submit_option2(ws, experiment, source)
            children = run.get_children()
            outputs = [f for f in run.get_file_names() if f.startswith("outputs/")]
            status = run.get_status()
        ws.close()
        best = best_run(settings.api_url, experiment, parent_run_id=run.id, headers=settings.auth_headers())
        done = time.monotonic()
        mse = best["metrics"]["mse"]["last"]
        alpha = best["metrics"]["alpha"]["last"]
        print(f"experiment {experiment}: submitted run {run.id} {status} with {len(children)} child runs "
              f"and {len(outputs)} files from ./outputs, through Kafka in {done - ready:.2f} s "
              f"({done - started:.1f} s including service start-up)")
        print(f"best child run: {best['run_id']} ({best['name']})  alpha={alpha:.2f}  mse={mse:.4f}")
        print(f"query API: {settings.api_url}/api/experiments/{experiment}/runs?parent={run.id}&order_by=metric:mse")
        print(f"web UI:    {settings.api_url}/experiments/{experiment}")
        if settings.token:
            print(f"token:     {settings.token}  (workspace 'default', admin: paste it into the web UI's login; "
                  "a plain Workspace() on this machine uses it)")
        if keep_running:
            print("services keep running for the UI; stop them with: .venv/bin/runstream services down")
    except BaseException:
        keep_running = False
        raise
    finally:
        if not keep_running:
            stop_background_serve(state_dir)
            devstack.down(state_dir)
            localstack.forget(state_dir)


def create_token(database_url: str) -> str:
    """A new admin token of workspace ``default`` for the demo's UI and scripts."""
    import asyncio

    import asyncpg

    from runstream.query_api import tokens

    async def create() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            token, _ = await tokens.create(conn, "default", "admin", name="runstream demo")
            return token
        finally:
            await conn.close()

    return asyncio.run(create())


def _ports() -> tuple[int, int]:
    """8080/8081 (the settings' defaults) when free, else any free loopback ports."""
    from runstream.devstack.stack import free_ports, port_is_free

    defaults = Settings()
    if port_is_free(defaults.api_port) and port_is_free(defaults.gateway_port):
        return defaults.api_port, defaults.gateway_port
    api, gateway = free_ports(2)
    return api, gateway


def start_background_serve(state_dir: Path, settings: Settings) -> subprocess.Popen[bytes]:
    """``runstream serve`` detached from this terminal, its pid in ``state_dir/serve.pid``."""
    with (state_dir / "serve.log").open("ab") as log:  # the child keeps its own descriptor
        server = subprocess.Popen([sys.executable, "-m", "runstream.cli", "serve"], env={**os.environ, **settings.to_env()},
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (state_dir / "serve.pid").write_text(str(server.pid))
    return server


def stop_background_serve(state_dir: Path, timeout: float = 30) -> None:
    """Stop the ``serve`` a previous demo left running in ``state_dir`` (no-op if none)."""
    import signal

    pid_file = state_dir / "serve.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"runstream.cli" not in cmdline:  # the pid was reused by something else
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.1)  # poll interval while waiting for the process to exit


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
