"""A TCP proxy on 127.0.0.1 that a test can cut, as a network failure would.

``cut_after`` bytes from client to server (counted over all connections) make the proxy
reset the current connection once; later connections pass untouched. ``connections`` counts
the connections accepted, so a test can see that its client reconnected.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class CuttableProxy:
    def __init__(self, target_port: int, cut_after: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.forwarded = 0
        self.connections = 0
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.connections += 1
            pair = (client, server)
            threading.Thread(target=self._pump, args=(client, server, pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, pair, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self._should_cut(len(data)):
                    self._reset(pair)
                    return
                dst.sendall(data)
        except OSError:
            pass
        for s in pair:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _should_cut(self, n: int) -> bool:
        with self._lock:
            self.forwarded += n
            if self.cut_after is not None and not self.cuts and self.forwarded >= self.cut_after:
                self.cuts += 1
                return True
        return False

    @staticmethod
    def _reset(pair: tuple) -> None:
        """Close both ends with RST (SO_LINGER 0): a dropped link, not a polite FIN."""
        for s in pair:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
