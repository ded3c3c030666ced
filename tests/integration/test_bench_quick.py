"""The benchmark's quick mode against roomcast: every message delivered once, in order.

Runs ``bench/run.py --quick --servers roomcast`` (a real ``roomcast serve`` with a fresh SQLite
file and the Bun load generator from ``bench/``; ``npm ci`` there first if ``bench/node_modules``
is missing). No timing is asserted: only what the load generator counted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def test_quick_fanout_delivers_every_message_once_in_order(tmp_path: Path) -> None:
    if not (BENCH / "node_modules" / ".bin" / "bun").exists() and shutil.which("npm") is None:
        pytest.skip("the load generator needs Bun from the npm registry, and npm is missing")
    out = tmp_path / "results.json"
    command = [sys.executable, str(BENCH / "run.py"), "--quick", "--servers", "roomcast"]
    command += ["--results-dir", str(tmp_path), "--json-out", str(out), "--no-chart"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"bench/run.py wrote no results:\n{proc.stdout}\n{proc.stderr}"
    runs = json.loads(out.read_text())["runs"]
    assert [r["label"] for r in runs] == ["fanout 8", "fanout 32"], proc.stdout
    for run in runs:
        where = f"{run['label']}: {run.get('failure') or run.get('last_error')}"
        assert run["rounds"] > 0, where
        assert run["deliveries"] == run["expected_deliveries"], where
        assert run["expected_deliveries"] == run["messages_sent"] * run["clients"], where
        assert run["missing"] == 0, where
        assert run["duplicates"] == 0, where
        assert run["out_of_order_ids"] == 0, where
        assert run["order_mismatches"] == 0, where
        assert run["unexpected"] == 0, where
        assert run["errors"] == 0, where
        # Broadcast only after commit: every message of the measured rounds is a stored row.
        assert run["committed"] == run["messages_sent"], where
        assert run["ok"], where
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
