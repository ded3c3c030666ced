"""How long a burst of WebSocket pings from one client freezes the server.

Starts ``roomcast serve`` on a free port (SQLite in a temporary directory; the
server is whatever ``python -m roomcast`` imports, so ``PYTHONPATH`` picks the
checkout to measure), connects one client and writes ``--pings`` empty
masked pings in a single write (or, with ``--stream SECONDS``, keeps writing
pings for that long). Meanwhile a second client polls ``GET /health`` every
10 ms from another connection. It prints the longest time ``/health`` took
to answer from the burst on (the freeze), how the attacker's connection
ended, and whether the server still answers afterwards.

    .venv/bin/python scripts/attacks/ping_burst.py --pings 100000
    .venv/bin/python scripts/attacks/ping_burst.py --stream 15
    .venv/bin/python scripts/attacks/ping_burst.py --pings 30000 --token-mode
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.raw_websocket import OPCODE_PING, RawWebSocket, mask_frame
from tests.harness.server import ServerProcess

SECRET = "ping-burst-secret-0123456789abcdef"


async def health_latency(port: int, errors: list[str] | None = None) -> float:
    """Seconds one ``GET /health`` takes on a new connection (inf if it fails)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 300)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 300)
        writer.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            raise OSError(f"answered {answer[:40]!r}")
    except (OSError, TimeoutError) as exc:
        if errors is not None:
            errors.append(repr(exc))
        return float("inf")
    return time.perf_counter() - started


async def poll(port: int, stop: asyncio.Event, samples: list[float], errors: list[str]) -> None:
    """Poll until told to stop and the server answers promptly again."""
    while True:
        latency = await health_latency(port, errors)
        samples.append(latency)
        if stop.is_set() and latency < 0.05:
            return
        await asyncio.sleep(0.01)


async def attacker_end(ws: RawWebSocket, seconds: float) -> str:
    """How the attacker's connection ended (it reads what the server sends)."""
    deadline = time.monotonic() + seconds
    pongs = 0
    while time.monotonic() < deadline:
        try:
            opcode, payload = await ws.read_frame(timeout=deadline - time.monotonic())
        except TimeoutError:
            return f"silent after {pongs} pongs"
        except (ConnectionError, EOFError) as exc:
            return f"ended ({type(exc).__name__}) after {pongs} pongs"
        except Exception as exc:
            return f"ended ({type(exc).__name__}) after {pongs} pongs"
        if opcode == 0xA:
            pongs += 1
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            return f"closed {code} after {pongs} pongs"
    return f"still open after {pongs} pongs"


async def run(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="ping-burst-"))
    extra = ["--auth-secret", SECRET] if args.token_mode else []
    server = ServerProcess(directory / "roomcast.db", *extra).start()
    try:
        query = (
            "token=" + jwt.encode({"sub": "attacker"}, SECRET, algorithm="HS256")
            if args.token_mode
            else "user_id=attacker"
        )
        ws = await RawWebSocket.connect(server.port, query)
        await ws.recv("connected")
        baseline = min([await health_latency(server.port) for _ in range(5)])
        samples: list[float] = []
        errors: list[str] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(server.port, stop, samples, errors))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        ping = mask_frame(b"", OPCODE_PING, key=os.urandom(4))
        sent = 0
        started = time.perf_counter()
        with contextlib.suppress(OSError):
            if args.stream:
                chunk = ping * 1000
                while time.perf_counter() - started < args.stream:
                    await asyncio.wait_for(loop.sock_sendall(ws.sock, chunk), 5)
                    sent += 1000
            else:
                await loop.sock_sendall(ws.sock, ping * args.pings)
                sent = args.pings
        ending = await attacker_end(ws, args.settle)
        stop.set()
        await poller
        recovered = time.perf_counter() - started
        after = await health_latency(server.port)
        ws.close()
        freeze = max(samples) if samples else float("nan")
        print(f"server: roomcast run from {os.getcwd()}")
        print(f"mode: {'token' if args.token_mode else 'open'}")
        print(f"pings written: {sent} ({sent * len(ping):,} bytes)")
        print(f"/health before: {baseline * 1000:.1f} ms")
        print(f"/health longest answer during the attack (freeze): {freeze:.3f} s")
        print(f"/health samples: {len(samples)}, failed: {len(errors)} {errors[:3]}")
        print(f"answering promptly again {recovered:.1f} s after the write began")
        print(f"attacker: {ending}")
        print(f"/health after: {after * 1000:.1f} ms")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=100_000, help="pings in the one write")
    parser.add_argument("--stream", type=float, default=0.0, help="keep writing for SECONDS")
    parser.add_argument("--token-mode", action="store_true", help="run the server in token mode")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds to watch the attacker afterwards"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
