"""The store's CPU per chat message, without sockets: many rooms, small batches.

Sparse traffic commits a few messages of different rooms at a time; this
measures exactly that cost of the SQLite store (process CPU time, so a noisy
machine's stolen time does not count):

    .venv/bin/python bench/store.py            # this checkout
    .venv/bin/python bench/store.py /path/src  # another source tree, to compare
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

ROOMS = 200
BATCH = 5
BATCHES = 4000


async def measure() -> float:
    from roomcast.adapters.sqlite_store import SQLiteStore
    from roomcast.ports.store import InsertMessage

    folder = tempfile.mkdtemp()
    store = SQLiteStore(f"sqlite:///{folder}/store.db", lambda: 0, 1024, None, 5.0, 0.0)
    await store.start()
    for room_id in range(1, ROOMS + 1):
        await store.ensure_room(room_id, "u", 0)

    async def batch(k: int) -> None:
        rooms = [(k * BATCH + j) % ROOMS + 1 for j in range(BATCH)]
        ops = [InsertMessage(r, "u", "hello there", "text", 0) for r in rooms]
        await asyncio.gather(*(store.run(op) for op in ops))

    for k in range(200):  # warm up
        await batch(k)
    started = time.process_time()
    for k in range(BATCHES):
        await batch(k)
    spent = time.process_time() - started
    await store.close()
    return spent / (BATCHES * BATCH)


def main() -> None:
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])
    per_message = asyncio.run(measure())
    print(
        f"{per_message * 1e6:.1f} µs CPU per message "
        f"(batches of {BATCH} over {ROOMS} rooms, {BATCHES * BATCH} messages)"
    )


if __name__ == "__main__":
    main()
