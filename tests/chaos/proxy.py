"""A TCP proxy that can stop forwarding without closing anything: a network partition on demand.

An agent dialled at the proxy reaches the scheduler through it. `pause()` stops moving bytes in
both directions but keeps every socket open, like a WAN link that silently drops traffic: neither
side sees a close or a reset, their writes pile up in kernel buffers and then block. `resume()`
lets the held bytes through in order. `sever()` closes every connection (a link that came back
with new addresses, forcing a reconnect). Threads, not asyncio, so it runs beside any event loop
the test uses and keeps forwarding while the test thread blocks.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

_CHUNK = 64 * 1024
_POLL_S = 0.05


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0  # accepted so far (a reconnect adds one)
        self.bytes_forwarded = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._spawn(self._accept, "proxy-accept")
        return self

    def pause(self) -> None:
        """Stop forwarding in both directions; sockets stay open and unread."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def sever(self) -> None:
        """Close every current connection (both sides see the link drop)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def stop(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.sever()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- internals --------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        self._listener.settimeout(_POLL_S * 4)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # A paused link accepts nothing new either: the connect hangs until resumed.
            while not self._flowing.wait(_POLL_S):
                if self._closed.is_set():
                    client.close()
                    return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            self._spawn(self._pump, "proxy-up", client, upstream)
            self._spawn(self._pump, "proxy-down", upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                # While paused, leave the bytes in the kernel: the sender sees backpressure,
                # never an error, exactly like a black-holed route.
                if not self._flowing.wait(_POLL_S):
                    continue
                ready, _, _ = select.select([src], [], [], _POLL_S)
                if not ready:
                    continue
                data = src.recv(_CHUNK)
                if not data:
                    break
                # Bytes read just as the link went down are held until it comes back.
                while not self._flowing.wait(_POLL_S):
                    if self._closed.is_set():
                        return
                dst.sendall(data)
                self.bytes_forwarded += len(data)
        except (OSError, ValueError):  # ValueError: closed by sever() under our feet
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
