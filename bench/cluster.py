"""Scale-out: what a roomcast cluster costs against one node, side by side in one run.

    .venv/bin/python bench/cluster.py              # fan-out 32 and sparse 200/5, ~1 min
    .venv/bin/python bench/cluster.py --repeat 2   # medians of two, ~2 min

Three setups of roomcast run for the whole run, each measured in turn with the load generator
and checks of ``bench/run.py`` (whose functions this reuses):

* ``sqlite-1node``: one node on a temporary SQLite file (what ``bench/run.py`` measures);
* ``pg-1node``: one node on PostgreSQL + Redis (its own schema and key prefix);
* ``pg-2nodes``: two nodes sharing another schema and prefix. The load generator connects its
  clients to the nodes in turn, so every room has members on both: each message is committed
  by one node, appended to the Redis log and delivered by both.

Scenarios: fan-out in one room of ``--fanout-size`` (32) clients, and sparse traffic (200
clients in rooms of 5, a message each per 200 ms, 10 s). Every delivery is checked as in
``bench/run.py`` (once, same order everywhere, increasing ids, nothing lost), and every message
sent, warm-up included, must be a stored row afterwards.

Pinning (2 cores): every roomcast process on CPU 1 (the two nodes of ``pg-2nodes`` share it),
the load generator on CPU 0. PostgreSQL and Redis are the machine's services and are left
unpinned. So the two-node setup measures what the cluster costs, not what a second core adds.
CPU is read from ``/proc``: roomcast's is the sum over its nodes; PostgreSQL's is the
postmaster, its background processes and the backends whose ``application_name`` is the
setup's schema (other clients' backends are left out), and Redis's is ``redis-server``, whole.
The schemas and Redis keys made for the run are dropped at the end. Results go to
``bench/results/<timestamp>-cluster/`` (JSON, Markdown and server logs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run
from run import Bench, Result, Server

POSTGRES_URL = os.environ.get("ROOMCAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ROOMCAST_TEST_REDIS", "redis://127.0.0.1:6379/0")
SERVICES = {"postgres", "redis-server"}


@dataclass
class Setup:
    name: str
    nodes: list[Server]
    #: PostgreSQL schema, Redis key prefix and application_name; None on SQLite.
    cluster: str | None = None


def pg_node(bench: Bench, name: str, cluster: str) -> Server:
    port = run.free_port()
    database = f"{bench.args.postgres}?search_path={cluster}&application_name={cluster}"
    command = [sys.executable, "-m", "roomcast", "serve", "--port", str(port)]
    command += ["--database", database, "--broker", bench.args.redis]
    command += ["--broker-prefix", cluster, *bench.extra_roomcast]
    source = bench.args.roomcast_src
    return Server(
        name,
        run.pinned(run.SERVER_CPU, command, bench.pin),
        port,
        bench.results_dir / f"{name}-{port}.log",
        source,
        run.roomcast_env(source),
    )


def psql(url: str, sql: str) -> str:
    command = ["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def drop_cluster_state(args: argparse.Namespace, cluster: str) -> None:
    """The schema and every Redis key of ``cluster`` (its prefix)."""
    psql(args.postgres, f'DROP SCHEMA IF EXISTS "{cluster}" CASCADE')
    redis = ["redis-cli", "-u", args.redis]
    scan = [*redis, "--scan", "--pattern", f"{cluster}:*"]
    keys = subprocess.run(scan, capture_output=True, text=True, check=True, timeout=30).stdout
    if keys.split():
        subprocess.run([*redis, "DEL", *keys.split()], capture_output=True, check=True, timeout=30)


def stored_rows(args: argparse.Namespace, setup: Setup) -> int:
    if setup.cluster is None:
        with contextlib.closing(sqlite3.connect(f"{setup.nodes[0].database}")) as conn:
            count: int = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
            return count
    return int(psql(args.postgres, f'SELECT count(*) FROM "{setup.cluster}".messages'))


def service_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL and Redis process, by pid."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if stat[stat.index("(") + 1 : stat.rindex(")")] in SERVICES:
                    found[int(entry.name)] = run.cpu_seconds(int(entry.name))
    return found


def attribute(args: argparse.Namespace, setup: Setup, result: Result) -> None:
    """Split the load generator's readings of postgres and redis-server into the setup's share
    (``postgres_cpu_s``, ``redis_cpu_s``) and other clients' backends (``postgres_other_cpu_s``).
    """
    if setup.cluster is None:
        return
    foreign: set[int] = set()
    activity = psql(
        args.postgres, "SELECT pid, backend_type, application_name FROM pg_stat_activity"
    )
    for line in activity.splitlines():
        pid, kind, name = line.split("|", 2)
        if kind == "client backend" and name != setup.cluster:
            foreign.add(int(pid))
    totals = {"postgres_cpu_s": 0.0, "postgres_other_cpu_s": 0.0, "redis_cpu_s": 0.0}
    for watched in result.get("watched_cpu_s", []):
        if watched["comm"] == "redis-server":
            key = "redis_cpu_s"
        else:
            key = "postgres_other_cpu_s" if watched["pid"] in foreign else "postgres_cpu_s"
        totals[key] += watched["cpu_s"]
    result.update(totals)


def measure(bench: Bench, setup: Setup, scenario: str, repeat: int) -> None:
    args = bench.args
    room = bench.room()
    if scenario == "fanout":
        label = f"fanout {args.fanout_size}"
        options = run.fanout_options(bench, args.fanout_size, setup.nodes[0], room)
    else:
        label = f"sparse {args.sparse_clients}/{args.sparse_room_size}"
        options = run.sparse_options(bench, room)
    if setup.cluster is not None:
        options["watch-comm"] = ",".join(sorted(SERVICES))
    print(f"  {label:<14} {setup.name:<13} (room {room})", flush=True)
    rows_before, services_before = stored_rows(args, setup), service_cpu()
    result = bench.run_loadgen(scenario, setup.nodes, options, label)
    services_after = service_cpu()
    services = sum(cpu - services_before.get(pid, 0.0) for pid, cpu in services_after.items())
    wall = result["run_wall_s"]
    if result.get("other_load") is not None and wall:
        # run.py's other load minus PostgreSQL and Redis, which have their own columns here.
        result["other_load"] = max(0.0, result["other_load"] * wall - services) / wall
    result["repeat"] = repeat
    result["stored"] = stored_rows(args, setup) - rows_before
    if scenario == "fanout":
        rounds = result.get("warmup_rounds", 0) + result.get("rounds", 0)
        result["expected_stored"] = rounds * result.get("clients", 0) * result.get("rooms", 1)
    else:
        result["expected_stored"] = result.get("messages_sent", 0)
    if result["stored"] != result["expected_stored"]:
        why = f"{result['stored']} messages stored, {result['expected_stored']} sent"
        print(f"    FAILED: {why}", flush=True)
        result["ok"] = False
        result["failure"] = f"{result.get('failure') or ''}; {why}".lstrip("; ")
    attribute(args, setup, result)
    bench.runs.append(result)
    run.show(result)
    if setup.cluster is not None and "postgres_cpu_s" in result:
        print(
            f"    postgres CPU {result['postgres_cpu_s']:.2f} s (other clients' backends "
            f"{result['postgres_other_cpu_s']:.2f} s), redis CPU {result['redis_cpu_s']:.2f} s",
            flush=True,
        )


# -- report ---------------------------------------------------------------------------------

HEADER = [
    "scenario",
    "setup",
    "delivered msg/s",
    "roomcast CPU s / M deliv.",
    "postgres CPU s / M",
    "redis CPU s / M",
    "all CPU s / M",
    "p50 / p99 / max ms",
    "roomcast CPU %",
    "postgres CPU %",
    "redis CPU %",
    "loadgen CPU %",
    "other CPU %",
    "stored",
    "ok",
]


@dataclass
class Line:
    scenario: str
    setup: str
    delivered: float | None
    roomcast: float | None
    postgres: float | None
    redis: float | None
    p50: float | None
    p99: float | None
    max: float | None
    shares: tuple[float | None, ...]
    stored: bool
    ok: bool

    @property
    def total(self) -> float | None:
        if self.roomcast is None:
            return None
        return self.roomcast + (self.postgres or 0.0) + (self.redis or 0.0)


def median_run(runs: list[Result]) -> Result:
    """The run with the median throughput, or for sparse runs (same rate) the median p99."""
    good = [r for r in runs if "elapsed_s" in r]
    if not good or "latency_ms" not in good[0]:
        return run.median_run(good) if good else {}
    ordered = sorted(good, key=lambda r: float(r["latency_ms"]["p99"]))
    return ordered[(len(ordered) - 1) // 2]


def line_of(label: str, setup: str, runs: list[Result]) -> Line:
    median = median_run(runs)
    row = run.to_row(label, setup, [median] if median else runs)
    deliveries, elapsed = median.get("deliveries") or 0, median.get("elapsed_s") or 0

    def per_million(key: str) -> float | None:
        value = median.get(key)
        return None if value is None or not deliveries else value * 1e6 / deliveries

    def share(key: str) -> float | None:
        value = median.get(key)
        return None if value is None or not elapsed else value / elapsed

    return Line(
        label,
        setup,
        row.delivered,
        row.cpu_per_million,
        per_million("postgres_cpu_s"),
        per_million("redis_cpu_s"),
        row.p50,
        row.p99,
        row.max,
        (
            row.server_share,
            share("postgres_cpu_s"),
            share("redis_cpu_s"),
            row.loadgen_share,
            row.other_load,
        ),
        all(r.get("stored") == r.get("expected_stored") for r in runs),
        all(r.get("ok") for r in runs),
    )


def pct(value: float | None) -> str:
    return run.fmt(None if value is None else value * 100, ".0f")


def table(lines: list[Line]) -> list[list[str]]:
    out: list[list[str]] = []
    for scenario in dict.fromkeys(line.scenario for line in lines):
        group = [line for line in lines if line.scenario == scenario]
        for line in group:
            latency = (
                "—" if line.p50 is None else f"{line.p50:.2f} / {line.p99:.2f} / {line.max:.1f}"
            )
            out.append(
                [
                    scenario,
                    line.setup,
                    run.fmt(line.delivered, ",.0f"),
                    run.fmt(line.roomcast, ".2f"),
                    run.fmt(line.postgres, ".2f"),
                    run.fmt(line.redis, ".2f"),
                    run.fmt(line.total, ".2f"),
                    latency,
                    *(pct(value) for value in line.shares),
                    "yes" if line.stored else "NO",
                    "yes" if line.ok else "NO",
                ]
            )
        pairs = [(a, b) for i, b in enumerate(group) for a in group[i + 1 :]]
        for line, base in pairs:
            latency = (
                "—"
                if line.p50 is None
                else f"{run.ratio(line.p50, base.p50)} / {run.ratio(line.p99, base.p99)} / "
                f"{run.ratio(line.max, base.max)}"
            )
            out.append(
                [
                    scenario,
                    f"{line.setup}/{base.setup}",
                    run.ratio(line.delivered, base.delivered),
                    run.ratio(line.roomcast, base.roomcast),
                    "",
                    "",
                    run.ratio(line.total, base.total),
                    latency,
                    *[""] * 7,
                ]
            )
    return out


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", default=POSTGRES_URL, help="PostgreSQL database URL")
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL")
    parser.add_argument("--scenarios", default="fanout,sparse", help="fanout,sparse")
    parser.add_argument("--fanout-size", type=int, default=32, help="clients in the room")
    parser.add_argument("--fanout-duration", type=float, default=5.0)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--sparse-clients", type=int, default=200)
    parser.add_argument("--sparse-room-size", type=int, default=5)
    parser.add_argument("--sparse-interval-ms", type=float, default=200)
    parser.add_argument("--sparse-duration", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per setup; median shown")
    parser.add_argument("--results-dir", type=Path, default=run.BENCH / "results")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--roomcast-arg", action="append", default=[], help="extra roomcast serve argument"
    )
    parser.add_argument("--roomcast-src", type=Path, default=run.ROOT, help="as in run.py")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := set(scenarios) - {"fanout", "sparse"}:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and bool(shutil.which("taskset"))
    bun = run.ensure_bun()
    run.raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir: Path = args.results_dir / f"{stamp}-cluster"
    results_dir.mkdir(parents=True, exist_ok=True)
    extra = run.roomcast_flags(args.roomcast_src) + list(args.roomcast_arg)
    command = " ".join([".venv/bin/python", "bench/cluster.py", *(argv or sys.argv[1:])])
    print(f"roomcast: one node vs a cluster; results in {results_dir}", flush=True)
    print(f"  pinned: {'roomcast on CPU 1, load generator on CPU 0' if pin else 'no'}", flush=True)
    started = time.monotonic()
    tag = f"rcbench_{os.getpid()}_{int(time.time())}"
    clusters = [f"{tag}_1", f"{tag}_2"]
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as tmp:
        bench = Bench(args, bun, Path(tmp), results_dir, pin, extra)
        sqlite = bench.new_server("roomcast")
        sqlite.name = "sqlite-1node"
        sqlite.log_path = results_dir / f"sqlite-1node-{sqlite.port}.log"
        setups = [
            Setup("sqlite-1node", [sqlite]),
            Setup("pg-1node", [pg_node(bench, "pg-1node", clusters[0])], clusters[0]),
            Setup(
                "pg-2nodes",
                [pg_node(bench, "pg-2nodes", clusters[1]) for _ in range(2)],
                clusters[1],
            ),
        ]
        try:
            with run.running([node for setup in setups for node in setup.nodes]):
                for repeat in range(args.repeat):
                    for scenario in scenarios:
                        order = setups if repeat % 2 == 0 else setups[::-1]
                        for setup in order:
                            measure(bench, setup, scenario, repeat)
        finally:
            for cluster in clusters:
                drop_cluster_state(args, cluster)
        runs = bench.runs
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in runs:
        groups.setdefault((result["label"], result["server"]), []).append(result)
    ordered = sorted(groups, key=lambda key: [s.name for s in setups].index(key[1]))
    rows = [line_of(label, name, groups[label, name]) for label, name in ordered]
    lines = table(rows)
    elapsed = time.monotonic() - started
    print()
    print(run.render(lines, HEADER))
    print(f"\nwall time {elapsed:.0f} s")
    environment: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "pinned": pin,
        "roomcast_cpu": run.SERVER_CPU if pin else None,
        "loadgen_cpu": run.LOADGEN_CPU if pin else None,
        "roomcast_args": extra,
        "roomcast_src": str(args.roomcast_src),
        "command": command,
    }
    document: dict[str, Any] = {
        "environment": environment,
        "rows": [row.__dict__ | {"total": row.total} for row in rows],
        "table": {"header": HEADER, "lines": lines},
        "runs": runs,
        "wall_s": elapsed,
    }
    (results_dir / "results.json").write_text(json.dumps(document, indent=2))
    (results_dir / "results.md").write_text(
        f"# roomcast cluster benchmark {stamp}\n\n`{command}`\n\n{run.markdown(lines, HEADER)}\n"
    )
    failed = [r for r in runs if not r.get("ok")]
    if failed:
        print(f"{len(failed)} run(s) failed their checks", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
