"""Whether legitimate clients get in while someone holds thousands of half-sent requests.

Starts ``roomcast serve`` on a free port (SQLite in a temporary directory; the
server is whatever ``python -m roomcast`` imports from the working
directory, so run it from the checkout to measure). An attacker then opens
``--sockets`` connections from ``--sources`` loopback addresses
(127.0.1.1, 127.0.1.2, ...; 127.0.0.0/8 is all loopback on Linux), each
sending ``GET /health HTTP/1.1\\r\\nHost: x\\r\\nX-a: `` and nothing more, and
opens a new one whenever the server drops one, for ``--seconds``. Meanwhile a
legitimate client from 127.0.0.2 tries, every 0.2 s, a WebSocket connection
(until its ``connected`` frame) and a ``GET /health``, each with a 5 s
timeout. It prints how many of each succeeded, how many half-sent requests
the attacker held, and the server's open descriptors.

    .venv/bin/python scripts/attacks/partial_heads.py --sockets 25000 --sources 25
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import time
from multiprocessing import Queue
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.server import ServerProcess

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: "
LEGIT = "127.0.0.2"


def raise_open_file_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Tally:
    def __init__(self) -> None:
        self.held = 0  # attacker connections open now
        self.most_held = 0
        self.opened = 0
        self.dropped = 0
        self.failed = 0


async def open_from(address: str, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((address, 0))
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), timeout
        )
    except BaseException:
        sock.close()
        raise
    return sock


async def attacker(address: str, port: int, until: float, tally: Tally) -> None:
    """One slot of the attack: hold a half-sent request, and another when it is dropped."""
    loop = asyncio.get_running_loop()
    while time.monotonic() < until:
        try:
            sock = await open_from(address, port, 5)
        except (OSError, TimeoutError):
            tally.failed += 1
            await asyncio.sleep(0.5)
            continue
        tally.opened += 1
        tally.held += 1
        tally.most_held = max(tally.most_held, tally.held)
        try:
            await loop.sock_sendall(sock, PARTIAL_HEAD)
            await asyncio.wait_for(loop.sock_recv(sock, 4096), max(0.1, until - time.monotonic()))
            tally.dropped += 1  # the server answered or closed it
        except (OSError, TimeoutError):
            pass
        finally:
            tally.held -= 1
            sock.close()


async def websocket_ok(port: int) -> bool:
    key = "MDEyMzQ1Njc4OWFiY2RlZg=="
    request = (
        f"GET /ws?user_id=legit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return await exchange(port, request, b'"type":"connected"')


async def health_ok(port: int) -> bool:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    return await exchange(port, request, b'"status":"ok"')


async def exchange(port: int, request: bytes, expected: bytes) -> bool:
    loop = asyncio.get_running_loop()
    try:
        sock = await open_from(LEGIT, port, 5)
    except (OSError, TimeoutError):
        return False
    try:
        deadline = time.monotonic() + 5
        await asyncio.wait_for(loop.sock_sendall(sock, request), 5)
        data = b""
        while expected not in data:
            chunk = await asyncio.wait_for(
                loop.sock_recv(sock, 65536), max(0.01, deadline - time.monotonic())
            )
            if not chunk:
                return False
            data += chunk
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()


async def attack(port: int, addresses: list[str], sockets: int, seconds: float) -> Tally:
    raise_open_file_limit()
    tally = Tally()
    until = time.monotonic() + seconds
    slots = [
        asyncio.create_task(attacker(addresses[i % len(addresses)], port, until, tally))
        for i in range(sockets)
    ]
    await asyncio.gather(*slots, return_exceptions=True)
    return tally


def attack_process(
    port: int, addresses: list[str], sockets: int, seconds: float, results: Queue[str]
) -> None:
    """One attacker process (each has its own descriptor limit)."""
    tally = asyncio.run(attack(port, addresses, sockets, seconds))
    results.put(f"{tally.opened} {tally.failed} {tally.most_held} {tally.dropped}")


async def run(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="partial-heads-"))
    server = ServerProcess(directory / "roomcast.db").start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        addresses = [f"127.0.1.{i + 1}" for i in range(args.sources)]
        results: Queue[str] = multiprocessing.Queue()
        each = args.sockets // args.processes
        attackers = [
            multiprocessing.Process(
                target=attack_process,
                args=(server.port, addresses[n :: args.processes], each, args.seconds, results),
            )
            for n in range(args.processes)
        ]
        for process in attackers:
            process.start()
        started = time.monotonic()
        await asyncio.sleep(args.ramp)
        ws_ok = ws_tries = http_ok = http_tries = 0
        fds: list[int] = []
        while time.monotonic() < started + args.seconds - 5:
            with contextlib.suppress(OSError):
                fds.append(open_fds_of(pid))
            ws_tries += 1
            ws_ok += await websocket_ok(server.port)
            http_tries += 1
            http_ok += await health_ok(server.port)
            await asyncio.sleep(0.2)
        opened = failed = most_held = dropped = 0
        for _ in attackers:
            numbers = [int(n) for n in results.get(timeout=args.seconds + 60).split()]
            opened, failed, dropped = opened + numbers[0], failed + numbers[1], dropped + numbers[3]
            most_held += numbers[2]
        for process in attackers:
            process.join()
        print(f"server: {os.getcwd()}")
        print(
            f"attacker: {args.sockets} slots from {args.sources} addresses in "
            f"{args.processes} processes, {args.seconds:.0f} s"
        )
        print(f"attacker connections opened: {opened}, refused or failed to connect: {failed}")
        print(f"attacker half-sent requests held at most (sum over processes): {most_held}")
        print(f"half-sent requests the server answered or closed: {dropped}")
        print(
            f"server open descriptors while measuring: {min(fds, default=0)}-{max(fds, default=0)}"
        )
        print(f"legitimate WebSocket connections accepted: {ws_ok}/{ws_tries}")
        print(f"legitimate GET /health answered: {http_ok}/{http_tries}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=25_000, help="attacker connections held")
    parser.add_argument("--sources", type=int, default=20, help="attacker source addresses")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the attack")
    parser.add_argument("--ramp", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--processes", type=int, default=2, help="attacker processes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
