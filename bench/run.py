"""Benchmark roomcast against a Bun reference server, side by side in one run.

    .venv/bin/python bench/run.py                 # every scenario, both servers (~2 min)
    .venv/bin/python bench/run.py --quick         # fan-out only, small counts, a few seconds
    .venv/bin/python bench/run.py --room-sizes 8,32,128,512 --repeat 3

Both servers are started by this script (roomcast with a fresh temporary SQLite file, the
reference with Bun) and pinned to CPU 1 with ``taskset``; the load generator (Bun, see
``bench/loadgen``) runs on CPU 0. Every scenario runs against both servers one after the other
in the same run, so the roomcast/Bun ratios compare like with like on a noisy shared machine.
Server CPU time comes from ``/proc/<pid>/stat``; memory from ``/proc/<pid>/status``.

Nothing is installed implicitly except ``npm ci`` in ``bench/`` when ``bench/node_modules``
is missing (it brings the pinned Bun binary from the npm registry). Results (table as JSON and
Markdown, a chart, server logs) go to ``bench/results/`` unless ``--results-dir`` says otherwise.
Exit status: 0 when every run completed and passed its correctness checks, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUN = BENCH / "node_modules" / ".bin" / "bun"
LOADGEN = BENCH / "loadgen" / "main.ts"
REFERENCE = BENCH / "reference" / "server.ts"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "1"
LOADGEN_CPU = "0"

#: roomcast's protective limits would refuse the benchmark's load (one address opening 10,000
#: connections, clients sending as fast as the server answers); they are lifted when the
#: running version has them. Everything else stays at its default.
ROOMCAST_OVERRIDES = {
    "--rate-limits": "off",
    "--max-connections-per-ip": "1000000",
    "--max-connections": "1000000",
    "--log-level": "warning",
}

Result = dict[str, Any]


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy (incl. steal), from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pinned(cpu: str, command: list[str], pin: bool) -> list[str]:
    """``taskset`` execs the command, so the child's pid is the command's own."""
    return ["taskset", "-c", cpu, *command] if pin else command


def ensure_bun() -> Path:
    if BUN.exists():
        return BUN
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("bench needs Bun from the npm registry, but npm is not installed")
    print("bench/node_modules is missing: running npm ci in bench/ ...", flush=True)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True, timeout=600)
    if not BUN.exists():
        raise SystemExit(f"npm ci did not install {BUN}")
    return BUN


def raise_fd_limit() -> int:
    """Let the servers and the load generator (our children) open as many sockets as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def roomcast_env(source: Path) -> dict[str, str]:
    """``python -m roomcast`` from ``source`` (its directory comes first on sys.path)."""
    path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def roomcast_flags(source: Path) -> list[str]:
    """The overrides this roomcast version understands (it is being developed concurrently)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "roomcast", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=source,
        env=roomcast_env(source),
        timeout=60,
    ).stdout
    flags: list[str] = []
    for flag, value in ROOMCAST_OVERRIDES.items():
        if re.search(rf"{flag}(?![\w-])", help_text):
            flags += [flag, value]
    if re.search(r"--files(?![\w-])", help_text):
        # Shared files' directory: not the checkout's (the default is ./roomcast-files).
        flags += ["--files", str(Path(tempfile.gettempdir()) / "roomcast-bench-files")]
    return flags


@dataclass
class Server:
    """A server under test: ``roomcast`` or ``bun`` (the reference)."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    cwd: Path
    env: dict[str, str]
    database: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 30.0) -> Server:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=log, cwd=self.cwd, env=self.env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy: see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PeakFileSize:
    """The largest size of some files (the servers' SQLite WALs), sampled every 5 ms on a
    thread while a block runs; 0 for a file that does not exist."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def _sample(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                self.peak = max(self.peak, path.stat().st_size)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(0.005):
            self._sample()

    def __enter__(self) -> PeakFileSize:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


#: What a load generator runs against: one server, or the nodes of a cluster (the load
#: generator spreads its clients over them round-robin and sums their CPU time).
Target: TypeAlias = Server | Sequence[Server]


def nodes_of(target: Target) -> list[Server]:
    return [target] if isinstance(target, Server) else list(target)


@dataclass
class Bench:
    args: argparse.Namespace
    bun: Path
    workdir: Path
    results_dir: Path
    pin: bool
    extra_roomcast: list[str]
    runs: list[Result] = field(default_factory=list)
    next_room: int = 1

    def new_server(self, name: str) -> Server:
        port = free_port()
        log_path = self.results_dir / f"{name}-{port}.log"
        if name == "roomcast":
            database = self.workdir / f"roomcast-{port}.db"
            command = [
                sys.executable,
                "-m",
                "roomcast",
                "serve",
                "--port",
                str(port),
                "--database",
                f"sqlite:///{database}",
                *self.extra_roomcast,
            ]
            source = self.args.roomcast_src
            command = pinned(SERVER_CPU, command, self.pin)
            return Server(name, command, port, log_path, source, roomcast_env(source), database)
        command = pinned(SERVER_CPU, [str(self.bun), str(REFERENCE), "--port", str(port)], self.pin)
        return Server(name, command, port, log_path, ROOT, dict(os.environ))

    def loadgen_command(
        self, scenario: str, server: Target, options: dict[str, object]
    ) -> list[str]:
        nodes = nodes_of(server)
        command = [str(self.bun), str(LOADGEN), scenario]
        command += ["--url", ",".join(node.url for node in nodes)]
        command += ["--server-pid", ",".join(str(node.pid) for node in nodes)]
        command += ["--clk-tck", str(CLK_TCK)]
        for key, value in options.items():
            command += [f"--{key}", str(value)]
        return pinned(LOADGEN_CPU, command, self.pin)

    def room(self) -> int:
        """A room id no earlier run used (rooms of many users)."""
        room = self.next_room
        self.next_room += 100_000
        return room

    def run_loadgen(
        self, scenario: str, server: Target, options: dict[str, object], label: str
    ) -> Result:
        """One load generator run; the server's CPU time is also read around the whole run."""
        nodes = nodes_of(server)
        limit = float(str(options.get("time-limit", 300)))
        command = self.loadgen_command(scenario, nodes, {**options, "time-limit": limit})
        cpu_before = sum(cpu_seconds(node.pid) for node in nodes)
        busy_before, children_before = machine_busy_seconds(), children_cpu_seconds()
        started = time.monotonic()
        wals = [Path(f"{node.database}-wal") for node in nodes if node.database is not None]
        with PeakFileSize(wals) as wal:
            try:
                proc = subprocess.run(command, capture_output=True, text=True, timeout=limit + 30)
            except subprocess.TimeoutExpired as exc:
                proc = subprocess.CompletedProcess(command, -9, "", f"killed after {exc.timeout} s")
        wall = time.monotonic() - started
        result = self.parse(proc, scenario, label, nodes[0])
        if wals:
            # The SQLite write-ahead log's largest size during the whole run (setup included).
            result["wal_peak_bytes"] = wal.peak
        server_cpu = sum(cpu_seconds(node.pid) for node in nodes) - cpu_before
        for node in nodes:
            self.check_alive(node, result)
        loadgen_cpu = children_cpu_seconds() - children_before
        busy = machine_busy_seconds() - busy_before
        result["run_wall_s"] = wall
        result["server_cpu_run_s"] = server_cpu
        result["loadgen_cpu_run_s"] = loadgen_cpu
        # CPU time of the machine charged to neither process, in cores: other processes on the
        # shared machine, plus kernel softirq work (loopback networking). A noise indicator.
        result["other_load"] = max(0.0, busy - server_cpu - loadgen_cpu) / wall if wall else None
        return result

    def check_alive(self, server: Server, result: Result) -> None:
        """A server that died during a run fails it, and is restarted for the next runs."""
        assert server.proc is not None
        code = server.proc.poll()
        if code is None:
            return
        why = f"{server.name} exited with {code} (see {server.log_path.name}); restarted"
        print(f"    {why}", flush=True)
        result["ok"] = False
        result["server_exit"] = code
        result["failure"] = f"{result.get('failure') or ''}; {why}".lstrip("; ")
        server.restarts += 1
        server.start()

    def parse(
        self, proc: subprocess.CompletedProcess[str], scenario: str, label: str, server: Server
    ) -> Result:
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            output = (proc.stderr or proc.stdout).strip().splitlines()
            errors = [line for line in output if "Error" in line or "error:" in line]
            shown = (errors[:1] + output[-2:]) if errors else output[-4:]
            failure = f"load generator exited with {proc.returncode}: " + " | ".join(shown)
            result: Result = {"scenario": scenario, "ok": False, "failure": failure}
        else:
            result = json.loads(lines[-1])
        result["label"] = label
        result["server"] = server.name
        if result.get("failure"):
            print(f"    FAILED: {result['failure']}", flush=True)
        return result


# -- scenarios ------------------------------------------------------------------------------


def fanout_options(
    bench: Bench, size: int, server: Server, room: int, rooms: int = 1
) -> dict[str, object]:
    args = bench.args
    options: dict[str, object] = {
        "clients": size,
        "rooms": rooms,
        "room": room,
        "duration": args.fanout_duration,
        "warmup-rounds": args.warmup_rounds,
        "prefix": f"f{room}",
        "time-limit": args.fanout_duration + 120,
    }
    if server.database is not None:
        options["db"] = server.database
    return options


def run_fanout(
    bench: Bench, servers: Sequence[Server], size: int, repeat: int, rooms: int = 1
) -> None:
    """Fan-out in one room of ``size`` clients, or ``rooms`` such rooms at once."""
    label = f"fanout {size}" if rooms == 1 else f"fanout {size}x{rooms}"
    order = list(servers) if repeat % 2 == 0 else list(reversed(servers))
    for server in order:
        room = bench.room()
        print(f"  {label:<18} {server.name:<9} (room {room})", flush=True)
        options = fanout_options(bench, size, server, room, rooms)
        result = bench.run_loadgen("fanout", server, options, label)
        result["repeat"] = repeat
        bench.runs.append(result)
        show(result)


def sparse_options(bench: Bench, room: int) -> dict[str, object]:
    args = bench.args
    return {
        "clients": args.sparse_clients,
        "room-size": args.sparse_room_size,
        "interval-ms": args.sparse_interval_ms,
        "duration": args.sparse_duration,
        "room": room,
        "prefix": f"s{room}",
        "time-limit": args.sparse_duration + 180,
    }


def run_sparse(bench: Bench, servers: Sequence[Server], repeat: int) -> None:
    args = bench.args
    label = f"sparse {args.sparse_clients}/{args.sparse_room_size}"
    order = list(servers) if repeat % 2 == 0 else list(reversed(servers))
    for server in order:
        room = bench.room()
        print(f"  {label:<18} {server.name:<9}", flush=True)
        options = sparse_options(bench, room)
        result = bench.run_loadgen("sparse", server, options, label)
        result["repeat"] = repeat
        bench.runs.append(result)
        show(result)


def run_connections(bench: Bench, names: Sequence[str], count: int, repeat: int) -> None:
    """Each server fresh for this scenario: memory freed by earlier runs would hide the growth."""
    args = bench.args
    label = f"connections {count}"
    order = list(names) if repeat % 2 == 0 else list(reversed(names))
    for name in order:
        server = bench.new_server(name).start()
        try:
            print(f"  {label:<18} {server.name:<9}", flush=True)
            options: dict[str, object] = {
                "clients": count,
                "concurrency": args.connect_concurrency,
                "prefix": f"c{repeat}",
                "time-limit": 240,
            }
            result = bench.run_loadgen("connections", server, options, label)
        finally:
            server.stop()
        result["repeat"] = repeat
        bench.runs.append(result)
        show(result)


def check_loadgen(bench: Bench, servers: Sequence[Server]) -> list[Result]:
    """Fan-out 32 with one load generator, then two in parallel (own rooms, both on CPU 0).

    If the aggregate rises with two, the server had headroom that one load generator left
    unused; together with the CPU shares (server core vs. load generator core) this says which
    side limits the measured throughput.
    """
    size = 32
    checks: list[Result] = []
    for server in servers:
        single = bench.run_loadgen(
            "fanout", server, fanout_options(bench, size, server, bench.room()), "check 1x32"
        )
        options = [fanout_options(bench, size, server, bench.room()) for _ in range(2)]
        for option in options:
            option.pop("db", None)
        commands = [bench.loadgen_command("fanout", server, o) for o in options]
        procs = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands
        ]
        outputs: list[tuple[str, str]] = []
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=bench.args.fanout_duration + 150))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                outputs.append(("", f"killed after {bench.args.fanout_duration + 150} s"))
        pair = [
            bench.parse(
                subprocess.CompletedProcess(c, p.returncode, out, err),
                "fanout",
                "check 2x32",
                server,
            )
            for c, p, (out, err) in zip(commands, procs, outputs, strict=True)
        ]
        bench.check_alive(server, pair[0])
        ok = all(r.get("ok") for r in [single, *pair])
        single_rate = float(single.get("deliveries_per_s", 0.0))
        pair_rate = sum(float(r.get("deliveries_per_s", 0.0)) for r in pair)
        check: Result = {
            "server": server.name,
            "ok": ok,
            "one_loadgen_deliveries_per_s": single_rate,
            "two_loadgens_deliveries_per_s": pair_rate,
            "gain": pair_rate / single_rate if single_rate else None,
            "one": utilisation(single),
            # Each window saw the whole server; the two windows nearly coincide.
            "two_server_cpu_share": max(
                (utilisation(r)["server_cpu_share"] or 0.0 for r in pair), default=0.0
            ),
            "two_loadgen_cpu_share": sum(utilisation(r)["loadgen_cpu_share"] or 0.0 for r in pair),
            "runs": [single, *pair],
        }
        checks.append(check)
    return checks


def utilisation(result: Result) -> dict[str, float | None]:
    elapsed = float(result.get("elapsed_s") or 0.0)
    deliveries = float(result.get("deliveries") or 0.0)
    if not elapsed or not deliveries:
        return {"server_cpu_share": None, "loadgen_cpu_share": None}
    return {
        "server_cpu_share": float(result["server_cpu_s"]) / elapsed,
        "loadgen_cpu_share": float(result["client_cpu_s"]) / elapsed,
        "server_us_per_delivery": float(result["server_cpu_s"]) * 1e6 / deliveries,
        "loadgen_us_per_delivery": float(result["client_cpu_s"]) * 1e6 / deliveries,
    }


# -- report ---------------------------------------------------------------------------------


def show(result: Result) -> None:
    if "deliveries_per_s" in result:
        extra = ""
        lat = result.get("latency_ms") or {}
        if lat.get("p50") is not None and lat.get("p99") is not None:
            extra = f", p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms"
        if result.get("wal_peak_bytes") is not None:
            extra += f", WAL peak {result['wal_peak_bytes'] / 2**20:.1f} MiB"
        print(
            f"    {result['deliveries_per_s']:>12,.0f} deliveries/s, server CPU "
            f"{result['server_cpu_s']:.2f} s, load generator CPU {result['client_cpu_s']:.2f} s"
            f" in {result['elapsed_s']:.2f} s{extra}, ok={result['ok']}",
            flush=True,
        )
    elif "connects_per_s" in result:
        print(
            f"    {result['opened']} open, {result['connects_per_s']:,.0f} connects/s, "
            f"{result['rss_per_connection_bytes'] / 1024:.1f} KiB/connection, ok={result['ok']}",
            flush=True,
        )


@dataclass
class Row:
    label: str
    server: str
    delivered: float | None = None
    cpu_per_million: float | None = None
    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    mem_per_conn: float | None = None
    connect_rate: float | None = None
    committed: float | None = None
    server_share: float | None = None
    loadgen_share: float | None = None
    other_load: float | None = None
    ok: bool = True
    runs: int = 0


def median_run(runs: list[Result]) -> Result:
    """The run with the median headline number (throughput, or connect rate)."""
    key = "deliveries_per_s" if "deliveries_per_s" in runs[0] else "connects_per_s"
    ordered = sorted(runs, key=lambda r: float(r.get(key) or 0.0))
    return ordered[(len(ordered) - 1) // 2]


def to_row(label: str, server: str, runs: list[Result]) -> Row:
    good = [r for r in runs if "elapsed_s" in r or "connect_s" in r]
    row = Row(label, server, ok=all(r.get("ok") for r in runs), runs=len(runs))
    if not good:
        return row
    r = median_run(good)
    row.other_load = r.get("other_load")
    if "deliveries_per_s" in r:
        row.delivered = r["deliveries_per_s"]
        if r["deliveries"]:
            row.cpu_per_million = r["server_cpu_s"] * 1e6 / r["deliveries"]
        row.server_share = r["server_cpu_s"] / r["elapsed_s"]
        row.loadgen_share = r["client_cpu_s"] / r["elapsed_s"]
        row.committed = r.get("committed_per_s")
    if r.get("latency_ms") and r["latency_ms"]["samples"]:
        row.p50, row.p99, row.max = (r["latency_ms"][k] for k in ("p50", "p99", "max"))
    if "connects_per_s" in r:
        row.connect_rate = r["connects_per_s"]
        row.mem_per_conn = r["rss_per_connection_bytes"]
        row.server_share = r["server_cpu_s"] / r["connect_s"]
    return row


def rows_of(runs: list[Result]) -> list[Row]:
    groups: dict[tuple[str, str], list[Result]] = {}
    for run in runs:
        groups.setdefault((run["label"], run["server"]), []).append(run)
    return [to_row(label, server, group) for (label, server), group in groups.items()]


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


HEADER = [
    "scenario",
    "server",
    "delivered msg/s",
    "server CPU s / M deliveries",
    "p50 / p99 / max ms",
    "KiB / conn",
    "connects/s",
    "committed msg/s",
    "server CPU %",
    "loadgen CPU %",
    "other CPU %",
    "ok",
]


def table(rows: list[Row]) -> list[list[str]]:
    lines: list[list[str]] = []
    by_label: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_label.setdefault(row.label, {})[row.server] = row
    for label, servers in by_label.items():
        for row in servers.values():
            latency = "—" if row.p50 is None else f"{row.p50:.2f} / {row.p99:.2f} / {row.max:.1f}"
            lines.append(
                [
                    label,
                    row.server,
                    fmt(row.delivered, ",.0f"),
                    fmt(row.cpu_per_million, ".2f"),
                    latency,
                    fmt(None if row.mem_per_conn is None else row.mem_per_conn / 1024, ".1f"),
                    fmt(row.connect_rate, ",.0f"),
                    fmt(row.committed, ",.0f"),
                    fmt(None if row.server_share is None else row.server_share * 100, ".0f"),
                    fmt(None if row.loadgen_share is None else row.loadgen_share * 100, ".0f"),
                    fmt(None if row.other_load is None else row.other_load * 100, ".0f"),
                    "yes" if row.ok else "NO",
                ]
            )
        mine, ref = servers.get("roomcast"), servers.get("bun")
        if mine is not None and ref is not None:
            latency = (
                "—"
                if mine.p50 is None
                else f"{ratio(mine.p50, ref.p50)} / {ratio(mine.p99, ref.p99)} / "
                f"{ratio(mine.max, ref.max)}"
            )
            lines.append(
                [
                    label,
                    "roomcast/bun",
                    ratio(mine.delivered, ref.delivered),
                    ratio(mine.cpu_per_million, ref.cpu_per_million),
                    latency,
                    ratio(mine.mem_per_conn, ref.mem_per_conn),
                    ratio(mine.connect_rate, ref.connect_rate),
                    "—",
                    "",
                    "",
                    "",
                    "",
                ]
            )
    return lines


def render(lines: list[list[str]], header: list[str] = HEADER) -> str:
    """The table as aligned text, for a terminal."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def markdown(lines: list[list[str]], header: list[str] = HEADER) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


#: A core this busy counts as saturated (the machine is shared: 100 % is rarely reached).
SATURATED = 0.85


def bound(server_share: float, loadgen_share: float) -> str:
    if server_share >= SATURATED and server_share >= loadgen_share:
        return "server-bound (the server's core is saturated)"
    if loadgen_share >= SATURATED:
        return "LOAD-GENERATOR-BOUND (its core is saturated: the rate is a lower bound)"
    return "round-trip-bound (neither core saturated: rounds wait for their last delivery)"


def describe_checks(checks: list[Result], rows: list[Row]) -> str:
    """How the load generator compares with each server, from the check and the fan-out runs."""
    out = []
    for check in checks:
        name = check["server"]
        one = check["one"]
        if one.get("server_cpu_share") is None:
            out.append(f"{name}: the check runs failed")
            continue
        server_us, loadgen_us = one["server_us_per_delivery"], one["loadgen_us_per_delivery"]
        lines = [
            f"{name}, fan-out 32 with one load generator: "
            f"{check['one_loadgen_deliveries_per_s']:,.0f} deliveries/s; server core "
            f"{one['server_cpu_share']:.0%} busy, load generator core "
            f"{one['loadgen_cpu_share']:.0%} -> "
            + bound(one["server_cpu_share"], one["loadgen_cpu_share"]),
            f"  two load generators in parallel (own rooms, same CPU 0): "
            f"{check['two_loadgens_deliveries_per_s']:,.0f} deliveries/s ({check['gain']:.2f}x); "
            f"server core {check['two_server_cpu_share']:.0%}, load generator core "
            f"{check['two_loadgen_cpu_share']:.0%}",
            f"  CPU per delivery: server {server_us:.2f} µs, load generator {loadgen_us:.2f} µs -> "
            + (
                "the load generator outpaces this server "
                f"({server_us / loadgen_us:.1f}x less CPU per delivery)"
                if loadgen_us < server_us
                else "the load generator needs more CPU per delivery than this server: "
                "where it saturates, this server's rates are lower bounds (compare server "
                "CPU per delivery there)"
            ),
        ]
        for row in rows:
            if row.server == name and row.label.startswith("fanout") and "x" in row.label:
                server_share, loadgen_share = row.server_share or 0.0, row.loadgen_share or 0.0
                lines.append(
                    f"  {row.label} (rooms at once, median of {row.runs}): "
                    f"{row.delivered or 0:,.0f} deliveries/s; server core {server_share:.0%}, "
                    f"load generator core {loadgen_share:.0%} -> "
                    + bound(server_share, loadgen_share)
                )
        out.append("\n".join(lines))
    return "\n".join(out)


def chart(rows: list[Row], path: Path) -> Path | None:
    """One panel per measured kind: fan-out rate and CPU by room size, sparse latency,
    memory per idle connection by count. None when nothing chartable ran."""
    fanout = [r for r in rows if r.label.startswith("fanout") and r.delivered is not None]
    sparse = [r for r in rows if r.label.startswith("sparse") and r.p50 is not None]
    held = [r for r in rows if r.label.startswith("connections") and r.mem_per_conn is not None]
    if not (fanout or sparse or held):
        return None
    servers = sorted({r.server for r in rows if "/" not in r.server}, key=lambda s: s != "roomcast")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not fanout:
            return None
        groups = list(dict.fromkeys(r.label.removeprefix("fanout ") for r in fanout))
        lookup = {(r.label.removeprefix("fanout "), r.server): r for r in fanout}
        return svg_chart(groups, servers, lookup, path.with_suffix(".svg"))
    panels = 2 * bool(fanout) + bool(sparse) + bool(held)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    free = iter(axes[0])
    width = 0.8 / len(servers)

    def grouped_bars(
        ax: Any, prefix: str, chosen: list[Row], value: Callable[[Row], float]
    ) -> None:
        groups = list(dict.fromkeys(r.label.removeprefix(prefix) for r in chosen))
        lookup = {(r.label.removeprefix(prefix), r.server): value(r) for r in chosen}
        for k, server in enumerate(servers):
            xs = [i + k * width for i in range(len(groups))]
            ax.bar(xs, [lookup.get((g, server), 0.0) for g in groups], width, label=server)
        ax.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(groups))])
        ax.set_xticklabels(groups)
        ax.legend()

    if fanout:
        for title, value in (
            ("fan-out: delivered messages/s", lambda r: r.delivered or 0.0),
            ("fan-out: server CPU s per million deliveries", lambda r: r.cpu_per_million or 0.0),
        ):
            ax = next(free)
            grouped_bars(ax, "fanout ", fanout, value)
            ax.set_xlabel("clients per room (x rooms at once)")
            ax.set_yscale("log")
            ax.set_title(title + " (log)", fontsize=10)
    if sparse:
        ax = next(free)
        names = [r.server for r in sparse]
        for k, metric in enumerate(("p50", "p99", "max")):
            values = [getattr(r, metric) for r in sparse]
            ax.bar([i + k * 0.27 for i in range(len(names))], values, 0.27, label=metric)
        ax.set_xticks([i + 0.27 for i in range(len(names))])
        ax.set_xticklabels(names)
        ax.set_yscale("log")
        ax.set_title(f"{sparse[0].label}: end-to-end latency ms (log)", fontsize=10)
        ax.legend()
    if held:
        ax = next(free)
        grouped_bars(ax, "connections ", held, lambda r: (r.mem_per_conn or 0.0) / 1024)
        ax.set_xlabel("idle connections held")
        ax.set_title("memory per idle connection, KiB (VmRSS growth)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def svg_chart(
    groups: list[str], servers: list[str], lookup: dict[tuple[str, str], Row], path: Path
) -> Path:
    """Without matplotlib: a plain SVG bar chart of fan-out throughput."""
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    top = max((r.delivered or 0) for r in lookup.values()) or 1
    bar, gap, left, bottom = 36, 30, 60, 280
    width = left + len(groups) * (bar * len(servers) + gap) + 140
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="320">',
        '<text x="60" y="20" font-size="14">fan-out: delivered messages/s</text>',
    ]
    for i, group in enumerate(groups):
        x0 = left + i * (bar * len(servers) + gap)
        for k, server in enumerate(servers):
            row = lookup.get((group, server))
            value = row.delivered or 0 if row else 0
            h = 240 * value / top
            parts.append(
                f'<rect x="{x0 + k * bar}" y="{bottom - h:.0f}" width="{bar - 4}" '
                f'height="{h:.0f}" fill="{colors[k % 3]}">'
                f"<title>{server} {group}: {value:,.0f}</title></rect>"
            )
        parts.append(f'<text x="{x0}" y="{bottom + 16}" font-size="12">{group}</text>')
    for k, server in enumerate(servers):
        parts.append(
            f'<text x="{width - 120}" y="{40 + 16 * k}" fill="{colors[k % 3]}">{server}</text>'
        )
    parts.append("</svg>")
    path.write_text("\n".join(parts))
    return path


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fan-out only, small and short")
    parser.add_argument("--servers", default="roomcast,bun", help="roomcast,bun (default: both)")
    parser.add_argument(
        "--scenarios",
        default="fanout,saturate,sparse,connections,check",
        help="any of fanout,saturate,sparse,connections,check (default: all)",
    )
    parser.add_argument("--room-sizes", help="fan-out sweep (default: 8,32,128,512; --quick: 8,32)")
    parser.add_argument(
        "--fanout-duration", type=float, default=5.0, help="seconds per fan-out run"
    )
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--saturate-size", type=int, default=32, help="clients per room")
    parser.add_argument(
        "--saturate-rooms", type=int, default=4, help="fan-out rooms running at once"
    )
    parser.add_argument("--sparse-clients", type=int, default=1000)
    parser.add_argument("--sparse-room-size", type=int, default=5)
    parser.add_argument("--sparse-interval-ms", type=float, default=200)
    parser.add_argument("--sparse-duration", type=float, default=10.0)
    parser.add_argument(
        "--connections",
        default="1000,10000,19000",
        help="idle-connection counts to hold, comma-separated (default: 1000,10000,19000)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; median shown")
    parser.add_argument("--results-dir", type=Path, default=BENCH / "results")
    parser.add_argument("--json-out", type=Path, help="also write the results JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--roomcast-arg", action="append", default=[], help="extra roomcast serve argument"
    )
    parser.add_argument(
        "--roomcast-src",
        type=Path,
        default=ROOT,
        help="run roomcast from this source tree (default: this checkout), e.g. a "
        "`git worktree` of another commit",
    )
    args = parser.parse_args(argv)
    if args.room_sizes is None:
        args.room_sizes = "8,32" if args.quick else "8,32,128,512"
    if args.quick:
        args.scenarios = "fanout"
        args.fanout_duration = min(args.fanout_duration, 1.0)
        args.warmup_rounds = min(args.warmup_rounds, 1)
    return args


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if unknown := set(names) - {"roomcast", "bun"}:
        raise SystemExit(f"unknown servers: {sorted(unknown)}")
    scenarios = {s.strip() for s in args.scenarios.split(",")}
    sizes = [int(s) for s in args.room_sizes.split(",")]
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not args.no_pin and not pin:
        print("taskset or a second CPU is missing: running unpinned", flush=True)
    bun = ensure_bun()
    fd_limit = raise_fd_limit()
    counts = [int(c) for c in args.connections.split(",")]
    if "connections" in scenarios and max(counts) + 100 > fd_limit:
        raise SystemExit(f"--connections {max(counts)} needs more than the {fd_limit} fd limit")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir: Path = args.results_dir / stamp
    results_dir.mkdir(parents=True, exist_ok=True)
    extra = (roomcast_flags(args.roomcast_src) if "roomcast" in names else []) + list(
        args.roomcast_arg
    )
    bun_version = subprocess.run([str(bun), "--version"], capture_output=True, text=True).stdout
    environment: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "pinned": pin,
        "server_cpu": SERVER_CPU if pin else None,
        "loadgen_cpu": LOADGEN_CPU if pin else None,
        "fd_limit": fd_limit,
        "bun": bun_version.strip(),
        "python": sys.version.split()[0],
        "roomcast_args": extra,
        "roomcast_src": str(args.roomcast_src),
        "command": " ".join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])]),
    }
    print(f"roomcast vs bun reference; results in {results_dir}", flush=True)
    print(f"  roomcast serve overrides: {' '.join(extra) or '(none)'}", flush=True)
    started = time.monotonic()
    checks: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as tmp:
        bench = Bench(args, bun, Path(tmp), results_dir, pin, extra)
        servers = [bench.new_server(name) for name in names]
        with running(servers):
            for repeat in range(args.repeat):
                if "fanout" in scenarios:
                    for size in sizes:
                        run_fanout(bench, servers, size, repeat)
                if "saturate" in scenarios:
                    size = args.saturate_size
                    run_fanout(bench, servers, size, repeat, rooms=args.saturate_rooms)
                if "sparse" in scenarios:
                    run_sparse(bench, servers, repeat)
            if "check" in scenarios:
                print("  load generator check (fan-out 32: one vs two load generators)", flush=True)
                checks = check_loadgen(bench, servers)
        if "connections" in scenarios:
            for count in counts:
                for repeat in range(args.repeat):
                    run_connections(bench, names, count, repeat)
        runs = bench.runs
        environment["server_restarts"] = {s.name: s.restarts for s in servers}
    rows = rows_of(runs)
    lines = table(rows)
    check_text = describe_checks(checks, rows)
    print()
    print(render(lines))
    if check_text:
        print("\nLoad generator check:\n" + check_text)
    elapsed = time.monotonic() - started
    print(f"\nwall time {elapsed:.0f} s")
    document = {
        "environment": environment,
        "rows": [row.__dict__ for row in rows],
        "table": {"header": HEADER, "lines": lines},
        "loadgen_check": checks,
        "runs": runs,
        "wall_s": elapsed,
    }
    (results_dir / "results.json").write_text(json.dumps(document, indent=2))
    (results_dir / "results.md").write_text(
        f"# roomcast benchmark {stamp}\n\n`{environment['command']}`\n\n{markdown(lines)}\n"
        + (f"\n## Load generator check\n\n```\n{check_text}\n```\n" if check_text else "")
    )
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(document, indent=2))
    if not args.no_chart and (picture := chart(rows, results_dir / "chart.png")) is not None:
        print(f"chart: {picture}")
    latest = args.results_dir / "latest"
    with contextlib.suppress(OSError):
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(results_dir.name)
    failed = [r for r in runs if not r.get("ok")] + [c for c in checks if not c.get("ok")]
    if failed:
        print(f"{len(failed)} run(s) failed their checks", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
