"""``roomcast serve --workers N``: N server processes on one machine, one port.

Each worker is a full node of the cluster (its own event loop, connections
and broker connection) listening with ``SO_REUSEPORT``, so the kernel spreads
new connections over the processes and every core is used. The processes
share nothing but PostgreSQL and Redis, exactly as nodes on different
machines do. This parent only starts them, restarts one that crashes, and
passes SIGTERM/SIGINT on so that each drains its own connections.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("roomcast.workers")

#: A worker that keeps crashing is restarted at most this often.
RESTART_DELAY = 1.0


def run_workers(count: int, argv: Sequence[str]) -> int:
    """Run ``count`` copies of ``roomcast serve argv`` until told to stop."""
    command = [sys.executable, "-m", "roomcast", *argv, "--workers", "1", "--reuse-port"]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs.extend(subprocess.Popen(command) for _ in range(count))
    log.info("started workers=%d pids=%s", count, [p.pid for p in procs])
    while True:
        time.sleep(0.2)
        if stopping:
            break
        for index, proc in enumerate(procs):
            code = proc.poll()
            if code is not None:
                log.error("worker exited pid=%d code=%d: restarting", proc.pid, code)
                time.sleep(RESTART_DELAY)
                if not stopping:
                    procs[index] = subprocess.Popen(command)
                    if stopping:  # the signal came while it was starting
                        procs[index].terminate()
    codes = [proc.wait() for proc in procs]
    return max(codes, default=0)
