"""A TCP proxy on 127.0.0.1 that delays every chunk, as a relay tens of milliseconds away.

`tc netem` needs privileges this machine does not give; this does the part that matters
for SMTP: each chunk read on one side is written to the other `one_way` seconds after it
arrived, in order, so a command and its reply cost one round trip of 2 * `one_way`.
Bandwidth is not limited.

In a test:

    with SmtpServer() as server, LatencyProxy(server.port, one_way=0.025) as proxy:
        ... send to 127.0.0.1:proxy.port ...

As a process (the benchmark runs it apart so it does not share the sender's GIL):

    python -m tests.support.latency TARGET_PORT ONE_WAY_SECONDS   prints "ready PORT";
                                                                  EOF on stdin stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading

from tests.support.net import free_port


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, one_way: float) -> None:
    """Copy `src` to `dst`, each chunk `one_way` seconds after it was read."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await chunks.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    dst.close()
                return
            dst.write(data)
            with contextlib.suppress(OSError):
                await dst.drain()

    task = asyncio.create_task(deliver())
    try:
        while True:
            try:
                data = await src.read(65536)
            except OSError:
                data = b""
            chunks.put_nowait((loop.time() + one_way, data))
            if not data:
                break
        await task
    finally:
        task.cancel()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LatencyProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`target`, `one_way` seconds each way, in a thread."""

    def __init__(self, target: int, one_way: float, port: int = 0) -> None:
        self.target = target
        self.one_way = one_way
        self.port = port or free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        _nodelay(writer)
        _nodelay(up_writer)
        try:
            await asyncio.gather(
                _pipe(reader, up_writer, self.one_way),
                _pipe(up_reader, writer, self.one_way),
            )
        except (asyncio.CancelledError, OSError):
            # Stopping (or a side gone): end quietly, as asyncio's stream callback in 3.11
            # reports a handler that ends cancelled as an error.
            writer.close()
            up_writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


def main() -> None:
    target, one_way = int(sys.argv[1]), float(sys.argv[2])
    with LatencyProxy(target, one_way) as proxy:
        print(f"ready {proxy.port}", flush=True)
        sys.stdin.read()  # until EOF


if __name__ == "__main__":
    main()
