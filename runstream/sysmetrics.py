"""System metrics of a run: CPU, memory, disk, network (and GPUs through NVML), logged
every ``settings.system_metrics_interval`` seconds as metrics under ``system/``.

Submitted runs record them by default (the submitting process samples while the script
runs); ``start_logging(log_system_metrics=True)`` opts an interactive run in. An interval
of 0 turns them off. psutil is imported when sampling starts (never by ``import
runstream``); NVML (``pip install "runstream[gpu]"``, the ``pynvml`` module of
nvidia-ml-py) only if it is installed, and a machine without an NVIDIA driver or GPU
simply records no ``gpu_*`` metrics.

Samples: the first after a second (or the interval, if shorter), then every interval, and
a last one when the run ends (before its status). Names (each a vector whose step is the
sample's index; its time is when it was taken):
``cpu_utilization_percentage``, ``system_memory_usage_megabytes``,
``system_memory_usage_percentage``, ``disk_usage_megabytes``,
``disk_usage_percentage``, ``disk_available_megabytes`` (the filesystem of the working
directory), ``network_receive_megabytes`` and ``network_transmit_megabytes`` (since
sampling began), for a submitted script also ``process_cpu_percentage`` (its process and
children; 100 = one core) and ``process_memory_megabytes`` (their resident memory), and
per GPU ``gpu_<i>_utilization_percentage``, ``gpu_<i>_memory_usage_megabytes`` and
``gpu_<i>_memory_usage_percentage``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runstream.run import Run

__all__ = ["SystemMetrics", "PREFIX"]

log = logging.getLogger("runstream.sysmetrics")

PREFIX = "system/"
FIRST_SAMPLE_S = 1.0
"""The first sample comes this long after the start, or after the interval if shorter."""
_MB = 1_000_000


class _Gpus:
    """NVML handles of every GPU, or none (no pynvml, no driver, no device)."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.nvml = pynvml
        except Exception as exc:  # ImportError, or NVMLError: driver/library not found, no device
            log.debug("no GPU metrics: %s", exc)

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a GPU that fell off the bus: skip it this time
                log.debug("GPU %d not sampled: %s", i, exc)
                continue
            out[f"gpu_{i}_utilization_percentage"] = float(util.gpu)
            out[f"gpu_{i}_memory_usage_megabytes"] = mem.used / _MB
            out[f"gpu_{i}_memory_usage_percentage"] = 100.0 * mem.used / mem.total if mem.total else 0.0
        return out

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown: %s", exc)


def _total_time(t: Any) -> float:
    """All CPU time of a ``cpu_times()`` reading; Linux counts guest time inside user and
    nice as well, so it is taken out once (as psutil does)."""
    return float(sum(t)) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


class SystemMetrics:
    """Samples on a daemon thread every ``interval`` seconds and logs on ``run``; for a
    submitted script, ``pid`` is its process (its tree is sampled too)."""

    def __init__(self, run: Run, interval: float, pid: int | None = None, path: str | None = None) -> None:
        import psutil

        self.psutil = psutil
        self.run, self.interval, self.path = run, interval, path or os.getcwd()
        self.root = psutil.Process(pid) if pid is not None else None
        self._procs: dict[int, Any] = {}
        if self.root is not None:
            self.root.cpu_percent(None)  # starts its measurement too
            self._procs[self.root.pid] = self.root
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the sampling thread's and stop()'s last sample
        self._step = 0
        self._net0 = psutil.net_io_counters()
        self._cpu0 = psutil.cpu_times()  # CPU busy share between two samples (see _cpu_percent)
        self._gpus = _Gpus()
        self._thread = threading.Thread(target=self._loop, name=f"runstream-sysmetrics-{run.id}", daemon=True)

    @classmethod
    def start_for(cls, run: Run, interval: float, pid: int | None = None, path: str | None = None) -> SystemMetrics | None:
        """Start sampling, or None when ``interval`` is 0 (off) or psutil is missing (warned)."""
        if interval <= 0:
            return None
        try:
            monitor = cls(run, interval, pid, path)
        except ImportError:
            log.warning("run %s: system metrics need psutil (pip install psutil); not recorded", run.id)
            return None
        monitor._thread.start()
        return monitor

    def stop(self) -> None:
        """Take a last sample and stop (no sample after this returns; again: nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._record()  # the end of a run shorter than the interval is seen too
        self._gpus.close()

    def _loop(self) -> None:
        # The first sample after a second (or the interval, if shorter): a short run still
        # gets a first sample and, at stop, a last one.
        wait = min(self.interval, FIRST_SAMPLE_S)
        while not self._stop.wait(wait):
            self._record()
            wait = self.interval

    def _record(self) -> None:
        with self._lock:
            try:
                sample = self.sample()
            except Exception as exc:  # a sampling failure never touches the run's own logging
                log.warning("run %s: system metrics not sampled: %s", self.run.id, exc)
                return
            for name, value in sample.items():
                self.run.log(PREFIX + name, value, step=self._step)
            self._step += 1

    def sample(self) -> dict[str, float]:
        """One sample of every metric (names without the prefix)."""
        ps = self.psutil
        mem = ps.virtual_memory()
        disk = ps.disk_usage(self.path)
        net = ps.net_io_counters()
        out = {
            "cpu_utilization_percentage": self._cpu_percent(),
            "system_memory_usage_megabytes": (mem.total - mem.available) / _MB,
            "system_memory_usage_percentage": float(mem.percent),
            "disk_usage_megabytes": disk.used / _MB,
            "disk_usage_percentage": float(disk.percent),
            "disk_available_megabytes": disk.free / _MB,
            "network_receive_megabytes": (net.bytes_recv - self._net0.bytes_recv) / _MB,
            "network_transmit_megabytes": (net.bytes_sent - self._net0.bytes_sent) / _MB,
        }
        if self.root is not None:
            out.update(self._process_tree())
        out.update(self._gpus.sample())
        return out

    def _cpu_percent(self) -> float:
        """Busy share of all CPUs since the last sample, from this monitor's own previous
        reading (``psutil.cpu_percent(None)`` keeps one reading per process, which any
        other caller resets)."""
        now = self.psutil.cpu_times()
        before, self._cpu0 = self._cpu0, now
        total = _total_time(now) - _total_time(before)
        busy = total - sum(getattr(now, f, 0.0) - getattr(before, f, 0.0) for f in ("idle", "iowait"))
        return max(0.0, min(100.0, 100.0 * busy / total)) if total > 0 else 0.0

    def _process_tree(self) -> dict[str, float]:
        """CPU (percent of one core, since the last sample) and resident memory of the
        script's process and its descendants; a process seen for the first time counts
        from now on (psutil measures CPU between two calls on one Process object)."""
        ps = self.psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except ps.Error:
            return {}
        cpu = rss = 0.0
        alive: dict[int, Any] = {}
        for p in procs:
            known = self._procs.get(p.pid, p)
            try:
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
            except ps.Error:
                continue
            alive[p.pid] = known
        self._procs = alive
        return {"process_cpu_percentage": cpu, "process_memory_megabytes": rss / _MB}
