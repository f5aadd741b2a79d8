"""What each install gives: `pip install runstream` is the SDK and the contract (no database
driver, no server module imported, no dev code shipped); `runstream[server]` adds the services.
Built from this checkout into a wheel and installed into a fresh virtualenv, as a user would."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.names import REPO

SERVER_ONLY = ("asyncpg", "psycopg", "numpy", "prometheus-client")
"""Distributions only the services need."""

SERVER_MODULES = ("runstream.ingest", "runstream.processors", "runstream.query_api", "runstream.serve",
                  "runstream.devstack", "asyncpg", "psycopg", "numpy", "aiokafka", "prometheus_client")
"""What `import runstream` must not import (aiokafka: only when the Kafka transport starts)."""


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout's files (tracked or not ignored), as a clean clone
    would be: setuptools' build/ directory in a working tree may hold what an older layout had."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, source)
    (built,) = out.glob("runstream-*.whl")
    return built


def test_the_wheel_installs_one_namespace_without_dev_code(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"runstream", wheel.name.split("-py3")[0] + ".dist-info"}
    for expected in ("runstream/schemas/events.py", "runstream/schemas/json/events.schema.json",
                     "runstream/schemas/migrations/0001_core.sql", "runstream/ingest/gateway.py",
                     "runstream/processors/runner.py", "runstream/query_api/app.py", "runstream/workspace.py"):
        assert expected in names
    assert not [n for n in names if n.startswith(("runstream/devstack/", "benchmarks/"))]


def test_the_services_dependencies_come_only_with_the_server_extra(wheel: Path) -> None:
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA").decode()
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for name in SERVER_ONLY:
        lines = [r for r in requires if re.match(rf"{re.escape(name)}(?![\w.-])", r)]  # psycopg, not psycopg2-binary
        assert lines and all('extra == "server"' in r for r in lines), (name, lines)
    assert 'Provides-Extra: server' in metadata


def test_a_fresh_virtualenv_gets_the_sdk_alone(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    requires = next(line for line in run(python, "-m", "pip", "show", "runstream").splitlines()
                    if line.startswith("Requires:"))
    assert not [name for name in SERVER_ONLY if name in requires], requires
    # From a directory outside the checkout, so only the installed package is importable.
    timing = run(python, "-X", "importtime", "-c", "import runstream; runstream.Workspace", cwd=tmp_path)
    imported = {line.rsplit("|", 1)[-1].strip() for line in timing.splitlines() if line.startswith("import time:")}
    assert "runstream.workspace" in imported
    assert not [m for m in imported if m.startswith(SERVER_MODULES)], sorted(imported)
    # Dev tools say where they live instead of failing on an import.
    done = subprocess.run([env / "bin" / "runstream", "services", "status"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "source checkout" in done.stderr
