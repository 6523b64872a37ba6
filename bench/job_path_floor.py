"""The floor under hashserve's job path: its processes, hops and synced commits, none of its logic.

A customer process submits (a unary call), the server commits the job (SQLite, WAL, FULL, off
the event loop as the group commit does), pushes it to an agent process over a bidirectional
stream, the agent runs the real embedding model in a worker thread and streams the result back,
the server commits it synced on its loop and hands it to the customer's watch (a server stream
opened after the submit's answer). No auth, validation, admission, placement, metrics or
protobuf schema: messages are raw bytes. What hashserve adds above this is its logic; what this
costs is what any design with the same durability and the same processes pays on this machine.

Used by `bench/e2e.py` (`floor_overhead_vs_agent_run_p50_ms`).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sqlite3
import statistics
import struct
import tempfile
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

_SERVICE = "floor.Floor"
_KEY_BYTES = 8
_RUN_MS = struct.Struct("<d")


def _raw(data: bytes) -> bytes:
    return data


def _serve(port_out: Connection, db_path: str) -> None:
    async def serve() -> None:
        db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE jobs (job_id BLOB PRIMARY KEY, state INT, body BLOB)")

        def commit(key: bytes, state: int, body: bytes) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", (key, state, body))
            db.execute("COMMIT")

        to_agent: asyncio.Queue[bytes] = asyncio.Queue()
        results: dict[bytes, asyncio.Future[bytes]] = {}

        async def submit(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            key = request[:_KEY_BYTES]
            await asyncio.to_thread(commit, key, 0, request)
            results[key] = asyncio.get_running_loop().create_future()
            to_agent.put_nowait(request)
            return key

        async def watch(
            request: bytes, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            key = request[:_KEY_BYTES]
            result = await results[key]
            del results[key]
            yield result

        async def agent(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            async def outcomes() -> None:
                async for message in requests:
                    key = message[:_KEY_BYTES]
                    commit(key, 2, message)
                    results[key].set_result(message)

            reader = asyncio.create_task(outcomes())
            try:
                while True:
                    yield await to_agent.get()
            finally:
                reader.cancel()

        handler = grpc.method_handlers_generic_handler(_SERVICE, {
            "Submit": grpc.unary_unary_rpc_method_handler(submit, _raw, _raw),
            "Watch": grpc.unary_stream_rpc_method_handler(watch, _raw, _raw),
            "Agent": grpc.stream_stream_rpc_method_handler(agent, _raw, _raw),
        })
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port_out.send(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


def _agent(port: int, ready: Connection) -> None:
    from node_agent.backends.onnx_embedding import OnnxEmbeddingBackend

    backend = OnnxEmbeddingBackend()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(f"/{_SERVICE}/Agent", _raw, _raw)()
            ready.send(True)
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                text = message[_KEY_BYTES:].decode()
                started = time.perf_counter()
                out = await loop.run_in_executor(None, backend.embed, [text])
                run_ms = (time.perf_counter() - started) * 1000
                vector = struct.pack(f"<{len(out.vectors[0])}f", *out.vectors[0])
                await call.write(message[:_KEY_BYTES] + _RUN_MS.pack(run_ms) + vector)

    backend.embed(["warm"])
    asyncio.run(run())


def floor_times(n: int, sentence: str) -> tuple[list[float], list[float]]:
    """Each of `n` embeddings' time from submit to its result watched back, and its agent's
    run time, through the floor's three processes (after a warm-up)."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        port_in, port_out = ctx.Pipe(duplex=False)
        server = ctx.Process(target=_serve, args=(port_out, str(Path(tmp) / "floor.db")),
                             daemon=True)
        server.start()
        agent: mp.process.BaseProcess | None = None
        try:
            if not port_in.poll(60):
                raise RuntimeError("the floor's server did not start")
            port = port_in.recv()
            ready_in, ready_out = ctx.Pipe(duplex=False)
            agent = ctx.Process(target=_agent, args=(port, ready_out), daemon=True)
            agent.start()
            if not ready_in.poll(120):
                raise RuntimeError("the floor's agent did not start")
            return asyncio.run(_customer(port, n, sentence))
        finally:
            for proc in (agent, server):
                if proc is not None:
                    proc.terminate()
                    proc.join(10)


async def _customer(port: int, n: int, sentence: str) -> tuple[list[float], list[float]]:
    times: list[float] = []
    run_ms: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        submit = channel.unary_unary(f"/{_SERVICE}/Submit", _raw, _raw)
        watch = channel.unary_stream(f"/{_SERVICE}/Watch", _raw, _raw)
        warm = 5
        for i in range(n + warm):
            started = time.perf_counter()
            key = await submit(b"%08d" % i + sentence.encode(), timeout=30)
            call = watch(key, timeout=30)
            result = await call.read()
            if result is grpc.aio.EOF:
                raise RuntimeError(f"the floor's watch of job {i} ended without its result")
            elapsed = (time.perf_counter() - started) * 1000
            if i >= warm:
                times.append(elapsed)
                run_ms.append(_RUN_MS.unpack_from(result, _KEY_BYTES)[0])
    return times, run_ms


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    e2e, runs = floor_times(200, "Grid operators pay large consumers to cut load.")
    over = statistics.median([t - r for t, r in zip(e2e, runs, strict=True)])
    print(f"floor p50 {statistics.median(e2e):.3f} ms, its agent's run p50 "
          f"{statistics.median(runs):.3f} ms, overhead over the run p50 {over:.3f} ms")
