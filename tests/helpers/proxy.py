"""A TCP proxy on a loopback port whose connections a test can cut: a network outage between
a client and a server that keeps its state (a restarted server loses it, and re-creating an
object races with the reads the outage is meant to interrupt)."""

from __future__ import annotations

import socket
import struct
import threading


class CuttableProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``. ``cut()`` resets every open
    connection and resets new ones until ``restore()``.

    With ``hold_after``, each connection forwards at most that many bytes towards the client
    until the first ``cut()``: what a client can hold in its buffers when the cut comes is
    bounded, whatever the sockets' buffer sizes (a kernel that autotunes a loopback receive
    buffer to tens of MB would otherwise hand the client the rest of the answer before the
    cut, and the read the cut is meant to break would never need the network)."""

    def __init__(self, target: int, *, hold_after: int | None = None) -> None:
        self.target = target
        self.hold_after = hold_after
        self._released = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._up = True
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                up = self._up
            if not up:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            self._spawn(self._pump, client, upstream, None)
            self._spawn(self._pump, upstream, client, self.hold_after)

    def _pump(self, src: socket.socket, dst: socket.socket, hold_after: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(1 << 16):
                if hold_after is not None and not self._released.is_set():
                    room = max(0, hold_after - sent)
                    if len(data) > room:
                        dst.sendall(data[:room])
                        sent += room
                        self._released.wait()  # until the first cut, which resets dst
                        data = data[room:]
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with self._lock:
                self._open.discard(s)
            _reset(s)

    def cut(self) -> None:
        with self._lock:
            self._up = False
            conns, self._open = self._open, set()
        for s in conns:
            _reset(s)
        self._released.set()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _reset(s: socket.socket) -> None:
    """Close ``s`` with a TCP reset, as a crashed peer does."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
