"""What the machine does, read from ``/proc`` (psutil is not a dependency).

- Peak resident memory of a process: ``VmHWM`` of ``/proc/<pid>/status``, reset at the start of
  each workload by writing ``5`` to ``/proc/<pid>/clear_refs`` (Linux >= 4.0; needs the right to
  ptrace the process, i.e. our own children or root). When the reset is refused the figure is the
  peak since the process started, and the result says so.
- CPU: the machine's split (``/proc/stat``: user, system, iowait, idle, steal) and the CPU time of
  each role over the same window (``/proc/<pid>/stat`` utime+stime; PostgreSQL = the postmaster and
  its backends), in cores: 1.0 = one core busy for the whole window; the benchmark process also
  by thread group (``/proc/<pid>/task``: its main thread, librdkafka's, the others).
- Which process serves a port: ``/proc/net/tcp`` listening sockets mapped to pids by their inode.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _kb(value: str | None) -> float | None:
    if not value:
        return None
    return int(value.split()[0]) / 1024.0


def peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` in MiB (None when the process is gone)."""
    value = _kb(_status(pid).get("VmHWM"))
    return None if value is None else round(value, 1)


def reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS; False when the kernel refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------- CPU


def machine_cpu() -> tuple[int, ...]:
    """The first line of /proc/stat: user nice system idle iowait irq softirq steal (ticks)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:9]
    return tuple(int(x) for x in fields)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _thread_ticks(pid: int, tid: int) -> tuple[str, int] | None:
    """(comm, utime+stime ticks) of one thread of ``pid``."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    comm = raw[raw.find("(") + 1 : raw.rfind(")")]
    rest = raw[raw.rfind(")") + 2 :].split()
    return comm, int(rest[11]) + int(rest[12])


def thread_groups(pid: int) -> dict[str, int]:
    """CPU ticks of a process by thread group: ``main`` (the thread whose id is the pid: the
    benchmark's event loop), ``librdkafka`` (threads named ``rdk:*``), ``total`` (the process,
    including threads that ended). ``total - main - librdkafka`` is every other thread."""
    out = {"main": 0, "librdkafka": 0, "total": 0}
    stat = _proc_stat(pid)
    if stat is None:
        return out
    out["total"] = stat[1]
    with contextlib.suppress(OSError):
        for name in os.listdir(f"/proc/{pid}/task"):
            thread = _thread_ticks(pid, int(name))
            if thread is None:
                continue
            comm, ticks = thread
            if int(name) == pid:
                out["main"] += ticks
            elif comm.startswith("rdk:"):
                out["librdkafka"] += ticks
    return out


def compiler_ticks(pid: int) -> int:
    """CPU ticks of a JVM's JIT compiler threads (``C1 CompilerThre``, ``C2 CompilerThre``)."""
    ticks = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(f"/proc/{pid}/task"):
            thread = _thread_ticks(pid, int(name))
            if thread is not None and "CompilerThre" in thread[0]:
                ticks += thread[1]
    return ticks


def split_seconds(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Seconds of CPU of each thread group between two :func:`thread_groups` readings."""
    d = {k: max(after.get(k, 0) - before.get(k, 0), 0) / CLK_TCK for k in after}
    main, rdk, total = d.get("main", 0.0), d.get("librdkafka", 0.0), d.get("total", 0.0)
    return {
        "main": round(main, 3),
        "librdkafka": round(rdk, 3),
        "threads": round(max(total - main - rdk, 0.0), 3),
    }


def all_processes() -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _proc_stat(int(name))
            if stat is not None:
                out[int(name)] = stat
    return out


@dataclass(slots=True)
class CpuWindow:
    """CPU use over one measurement window: the machine split and the time of each role."""

    roles: Mapping[str, int]
    """role name -> pid (``postgresql``: the postmaster, ``api*``: ``serve`` that may run
    ``--workers`` children; their children count too)."""
    parent_roles: frozenset[str] = frozenset({"postgresql", "api", "api2"})
    _t0: float = 0.0
    _machine0: tuple[int, ...] = ()
    split_roles: frozenset[str] = frozenset({"bench"})
    """Roles whose CPU is also split by thread group (:func:`thread_groups`)."""
    _procs0: dict[int, tuple[int, int]] = field(default_factory=dict)
    _threads0: dict[str, dict[str, int]] = field(default_factory=dict)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = machine_cpu()
        self._procs0 = all_processes()
        self._threads0 = {
            role: thread_groups(pid)
            for role, pid in self.roles.items()
            if role in self.split_roles and pid
        }

    def stop(self) -> dict[str, object]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        machine1 = machine_cpu()
        procs1 = all_processes()
        threads = {
            role: split_seconds(before, thread_groups(self.roles[role]))
            for role, before in self._threads0.items()
        }
        d = [b - a for a, b in zip(self._machine0, machine1, strict=True)]
        total = max(sum(d), 1)
        user, nice, system, idle, iowait, irq, softirq, steal = d
        by_pid_role: dict[int, str] = {pid: role for role, pid in self.roles.items() if pid}
        seconds: dict[str, float] = dict.fromkeys(self.roles, 0.0)
        seconds["other"] = 0.0
        for pid, (ppid, ticks1) in procs1.items():
            ticks0 = self._procs0.get(pid, (ppid, 0))[1]
            delta = max(ticks1 - ticks0, 0)
            if not delta:
                continue
            role = by_pid_role.get(pid)
            if role is None:
                parent = by_pid_role.get(ppid)
                role = parent if parent in self.parent_roles else "other"
            seconds[role] += delta / CLK_TCK
        return {
            "window_s": round(elapsed, 3),
            "cores": os.cpu_count(),
            "busy_pct": round(100.0 * (total - idle - iowait) / total, 1),
            "user_pct": round(100.0 * (user + nice) / total, 1),
            "system_pct": round(100.0 * (system + irq + softirq) / total, 1),
            "iowait_pct": round(100.0 * iowait / total, 1),
            "steal_pct": round(100.0 * steal / total, 1),
            "cores_by_process": {k: round(v / elapsed, 3) for k, v in seconds.items()},
            "cpu_s_by_process": {k: round(v, 3) for k, v in seconds.items()},
            "cpu_s_by_thread_group": threads,
        }


# -------------------------------------------------------------------------------------- ports


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (IPv4 or IPv6), or None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") in targets:
                        return int(name)
    return None


# ------------------------------------------------------------------------------------ machine


def machine_info() -> dict[str, object]:
    """Cores, memory, CPU model, kernel and Python (service versions are added by the caller)."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    meminfo = _meminfo()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": round((meminfo.get("MemTotal") or 0) / 1024),
        "kernel": platform.release(),
        "python_version": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            with contextlib.suppress(ValueError, IndexError):
                out[key] = int(value.split()[0])
    return out
