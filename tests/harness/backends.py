"""Where servers keep their state: SQLite by default, PostgreSQL + Redis when asked."""

from __future__ import annotations

import os
import subprocess

#: ``ROOMCAST_TEST_BACKEND=cluster`` runs every server on PostgreSQL + Redis as a
#: one-node cluster (each server in its own schema and key prefix), so that the
#: whole single-node suite checks both back ends.
CLUSTER = os.environ.get("ROOMCAST_TEST_BACKEND") == "cluster"
POSTGRES_URL = os.environ.get("ROOMCAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ROOMCAST_TEST_REDIS", "redis://127.0.0.1:6379/0")


def cluster_args(name: str) -> list[str]:
    """Flags that put a server on PostgreSQL schema ``name`` and Redis prefix ``name``."""
    return [
        "--database", f"{POSTGRES_URL}?search_path={name}",
        "--broker", REDIS_URL,
        "--broker-prefix", name,
    ]  # fmt: skip


#: Cluster names servers of this test session used (dropped when it ends).
CLUSTERS_USED: set[str] = set()


def drop_cluster_state(name: str) -> None:
    """Remove a test cluster's schema and keys."""
    subprocess.run(
        ["psql", POSTGRES_URL, "-q", "-c", f"DROP SCHEMA IF EXISTS {name} CASCADE"],
        check=False,
        capture_output=True,
    )
    subprocess.run(
        ["redis-cli", "-u", REDIS_URL, "DEL", f"{name}:log", f"{name}:nodes"],
        check=False,
        capture_output=True,
    )
