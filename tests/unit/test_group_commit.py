"""GroupCommitter: what goes into one transaction, and in which order results come back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from roomcast.ports.group_commit import GroupCommitter


class Recorder:
    """An ``execute`` that records each transaction's operations."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def execute(self, ops: Sequence[int]) -> list[int]:
        self.batches.append(list(ops))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("disk on fire")
        return [op * 10 for op in ops]


async def test_results_come_back_in_submission_order() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.execute, max_batch=3)
    committer.start()
    seen: list[tuple[int | None, BaseException | None]] = []
    for op in range(7):
        committer.submit(op, lambda result, error: seen.append((result, error)))
    await committer.close()
    assert seen == [(op * 10, None) for op in range(7)]
    assert recorder.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failed_transaction_fails_each_of_its_operations() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(Recorder(fail=True).execute)
    committer.start()
    futures = [committer.run(op) for op in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await committer.close()


async def test_writes_arriving_on_consecutive_loop_turns_share_one_commit() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.execute, linger=5.0)
    committer.start()
    futures = []
    for op in range(20):  # one write per loop turn, as sockets are read one poll after another
        futures.append(committer.run(op))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*futures), timeout=4.0)
    assert recorder.batches == [list(range(20))]
    await committer.close()


async def test_a_lone_write_does_not_wait_out_the_linger() -> None:
    recorder = Recorder()
    # A linger far longer than the test's timeout: only the quiet loop turn can end the wait.
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.execute, linger=60.0)
    committer.start()
    assert await asyncio.wait_for(committer.run(7), timeout=5.0) == 70
    await committer.close()


async def test_a_steady_stream_is_committed_within_the_linger() -> None:
    recorder = Recorder()
    linger = 0.05
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.execute, linger=linger)
    committer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = committer.run(0)
    op = 1
    while not first.done():  # a write on every loop turn: the burst never ends by itself
        committer.submit(op, lambda result, error: None)
        op += 1
        await asyncio.sleep(0)
        assert loop.time() - started < 5, "the linger never ended"
    assert await first == 0
    # It waited for company (many writes share the first commit) but not for ever.
    assert 1 < len(recorder.batches[0]) < op
    assert loop.time() - started >= linger
    await committer.close()


async def test_close_commits_what_is_queued_and_refuses_more() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int, int] = GroupCommitter(recorder.execute, linger=60.0)
    committer.start()
    pending = [committer.run(op) for op in range(4)]
    await committer.close()
    assert [f.result() for f in pending] == [0, 10, 20, 30]
    with pytest.raises(RuntimeError):
        committer.submit(5, lambda result, error: None)
