"""``/health`` and ``/metrics`` tell when writes fail, and when they work again."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.client import Client
from tests.harness.database import database_locked
from tests.harness.http import http_json, http_request
from tests.harness.server import ServerProcess


async def commit_metrics(server: ServerProcess) -> dict[str, float]:
    status, _, text = await http_request("GET", f"{server.http}/metrics")
    assert status == 200
    return {  # the failure counter, and the state of the most recent commit
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("roomcast_db_commit_failures_total", "roomcast_db_commit_failing")
    }


async def test_health_is_503_while_commits_fail_and_ok_once_writes_commit_again(
    tmp_db: Path,
) -> None:
    server = ServerProcess(tmp_db, "--db-timeout", "0.2").start()
    alice = await Client.connect(server.ws_url, "alice")
    try:
        await alice.join(1)
        await alice.chat(1, "stored")
        status, body = await http_json("GET", f"{server.http}/health")
        assert (status, body["status"], body["database"]) == (200, "ok", "ok")
        before = await commit_metrics(server)

        # Another process holds the write lock past --db-timeout: every write fails.
        async with database_locked(server):
            await alice.send("chat", {"room_id": 1, "content": "not stored"})
            await alice.expect_error("internal", "chat")
            status, body = await http_json("GET", f"{server.http}/health")
            assert (status, body["status"], body["database"]) == (503, "unavailable", "failing")
            during = await commit_metrics(server)
            assert before["roomcast_db_commit_failing"] == 0
            assert during["roomcast_db_commit_failing"] == 1
            failures = "roomcast_db_commit_failures_total"
            assert during[failures] >= before[failures] + 1

        # The lock is gone: the health check's own probe write commits, so the
        # node is healthy again without waiting for a user to write.
        status, body = await http_json("GET", f"{server.http}/health")
        assert (status, body["status"], body["database"]) == (200, "ok", "ok")
        after = await commit_metrics(server)
        assert after["roomcast_db_commit_failing"] == 0
        failures = "roomcast_db_commit_failures_total"
        assert after[failures] == during[failures]
        assert (await alice.chat(1, "stored again"))["content"] == "stored again"
    finally:
        await alice.close()
        assert server.stop() == 0
