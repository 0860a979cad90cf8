"""A loopback TCP forwarder the tests can cut and restore, to take a real service (here
RabbitMQ) away from the worker and give it back, without touching the service itself;
an observer may read what passes (benchmarks/rabbitmq_cost.py counts AMQP frames)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from worker.redis_server import free_port

#: Given ``True`` for the client-to-service direction of a new connection, ``False``
#: for the other, returns what to call with every chunk passing that way.
Observer = Callable[[bool], Callable[[bytes], None]]


class TcpProxy:
    """Forwards ``<listen_host>:<port>`` (127.0.0.1 unless told) to ``target``; :meth:`cut`
    closes every connection and refuses new ones, :meth:`restore` accepts again on the
    same port. :attr:`open_upstream` counts the forwarded connections the target has not
    closed yet (the proxy never closes one on its own before :meth:`cut`)."""

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        observe: Observer | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        self.observe = observe
        self.listen_host = listen_host
        self.port = free_port()
        self.open_upstream = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        """Listen (again) and forward every accepted connection."""
        listener = socket.create_server((self.listen_host, self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and close every forwarded connection (both ends)."""
        with self._lock:
            if self._listener is not None:
                # shutdown wakes the thread blocked in accept(); close alone would leave
                # the socket listening until that accept returns.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
                self.open_upstream += 1
            for src, dst, outbound in ((client, upstream, True), (upstream, client, False)):
                sink = self.observe(outbound) if self.observe else None
                threading.Thread(
                    target=self._pump, args=(src, dst, sink, not outbound), daemon=True
                ).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        sink: Callable[[bytes], None] | None,
        from_target: bool,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if sink is not None:
                    sink(data)
                dst.sendall(data)
        if from_target:  # the target closed this connection (or cut() did)
            with self._lock:
                self.open_upstream -= 1
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
