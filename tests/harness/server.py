"""``roomcast serve`` as a child process on a free port, and what tests read of it."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness.backends import CLUSTER, CLUSTERS_USED, cluster_args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``roomcast serve`` as a child process, as a user would run it.

    ``cluster`` names a PostgreSQL schema and Redis prefix: several processes
    with the same name are nodes of one cluster.
    """

    def __init__(
        self,
        database: Path,
        *args: str,
        env: dict[str, str] | None = None,
        cluster: str | None = None,
        open_files: int | None = None,
    ) -> None:
        self.database = database
        self.open_files = open_files  # the process's descriptor limit, when given
        self.args = list(args)
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = database.with_suffix(f".{self.port}.log")
        if cluster is None and CLUSTER:
            cluster = "t_" + hashlib.sha1(str(database).encode()).hexdigest()[:16]
        self.cluster = cluster

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{self.http}/ws"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.cluster:
            CLUSTERS_USED.add(self.cluster)
        backend = (
            cluster_args(self.cluster)
            if self.cluster
            else ["--database", f"sqlite:///{self.database}"]
        )
        command = [
            sys.executable, "-m", "roomcast", "serve",
            "--port", str(self.port),
            *backend,
            # Beside the database: shared by the nodes of one cluster here.
            "--files", str(self.database.with_suffix(".files")),
            *self.args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        limit = self.open_files
        self.proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=(
                None
                if limit is None
                else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            ),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the process with ``sig``; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def rss_bytes(pid: int) -> int:
    """The resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
