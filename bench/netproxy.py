"""A loopback TCP proxy that adds a fixed delay each way, to model a server across a network.

Every chunk read from one side is written to the other ``delay`` seconds after it arrived,
in order; the delay is latency, not a bandwidth cap (chunks in flight overlap). It listens
on 127.0.0.1 only, on a free port, takes at most ``max_connections`` at once and stops
with its ``with`` block (or :meth:`close`)::

    with DelayProxy(("127.0.0.1", 27017), delay=0.002) as proxy:
        url = f"mongodb://127.0.0.1:{proxy.port}/"

``python bench/netproxy.py PORT [--delay-ms 2]`` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import selectors
import socket
import threading
import time


class _Direction:
    """One direction of one connection: chunks waiting out their delay, then bytes ready
    to send (held when the receiver is slow)."""

    def __init__(self, dst: socket.socket):
        self.dst = dst
        self.delayed: collections.deque[tuple[float, bytes]] = collections.deque()
        self.out = bytearray()
        self.eof = False  # the source closed: close dst once everything is sent


class DelayProxy:
    """Forward 127.0.0.1:<port> to ``target`` with ``delay`` seconds added each way.

    One thread and one selector serve every connection: a chunk read is stamped with
    the time it is due and sent then (no thread per direction waking up for each chunk,
    which on a busy machine would add scheduling delay of its own)."""

    def __init__(self, target: tuple[str, int], delay: float = 0.002, *,
                 max_connections: int = 64):
        self.target, self.delay, self.max_connections = target, delay, max_connections
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.connections = 0  # accepted so far
        self._open = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self._timers: list[tuple[float, int, _Direction]] = []
        self._seq = itertools.count()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="delay-proxy")
        self._thread.start()

    # -- the loop
    def _loop(self) -> None:
        while not self._closed:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, events in self._sel.select(timeout):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    return
                else:
                    src_dir, back_dir = key.data
                    if events & selectors.EVENT_READ:
                        self._read(key.fileobj, src_dir)
                    if events & selectors.EVENT_WRITE:
                        self._flush(back_dir)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, d = heapq.heappop(self._timers)
                self._release(d, now)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        if self._open >= self.max_connections:
            client.close()  # bounded: refuse rather than grow
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.connections += 1
        self._open += 1
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        to_server, to_client = _Direction(server), _Direction(client)
        # each socket's key: (the direction it feeds when read, the one it drains into)
        self._sel.register(client, selectors.EVENT_READ, (to_server, to_client))
        self._sel.register(server, selectors.EVENT_READ, (to_client, to_server))

    def _read(self, sock: socket.socket, d: _Direction) -> None:
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            d.eof = True
            self._unwatch_read(sock)
        due = time.monotonic() + self.delay
        d.delayed.append((due, data))
        heapq.heappush(self._timers, (due, next(self._seq), d))

    def _release(self, d: _Direction, now: float) -> None:
        while d.delayed and d.delayed[0][0] <= now:
            _, data = d.delayed.popleft()
            if data:
                d.out += data
            else:
                d.eof = True
        self._flush(d)

    def _flush(self, d: _Direction) -> None:
        try:
            while d.out:
                sent = d.dst.send(d.out)
                del d.out[:sent]
        except BlockingIOError:
            self._watch(d.dst, write=True)
            return
        except OSError:
            d.out.clear()
            d.eof = True
        self._watch(d.dst, write=False)
        if d.eof and not d.out and not d.delayed:
            self._drop(d.dst)

    def _watch(self, sock: socket.socket, *, write: bool) -> None:
        try:
            key = self._sel.get_key(sock)
        except (KeyError, ValueError):
            return
        events = (key.events | selectors.EVENT_WRITE) if write else (
            key.events & ~selectors.EVENT_WRITE)
        if events != key.events:
            if events:
                self._sel.modify(sock, events, key.data)
            else:
                self._sel.unregister(sock)

    def _unwatch_read(self, sock: socket.socket) -> None:
        try:
            key = self._sel.get_key(sock)
        except (KeyError, ValueError):
            return
        events = key.events & ~selectors.EVENT_READ
        if events:
            self._sel.modify(sock, events, key.data)
        else:
            self._sel.unregister(sock)

    def _drop(self, sock: socket.socket) -> None:
        """One side is finished: close both sockets of the connection."""
        try:
            key = self._sel.get_key(sock)
            _, back = key.data
        except (KeyError, ValueError):
            return
        for s in (sock, back.dst):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self._open -= 1

    def close(self) -> None:
        self._closed = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()
        self._wake_w.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="the server's port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="added each way")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long")
    args = parser.parse_args()
    with DelayProxy(("127.0.0.1", args.port), args.delay_ms / 1000) as proxy:
        print(f"127.0.0.1:{proxy.port} -> 127.0.0.1:{args.port}, +{args.delay_ms:g} ms each way",
              flush=True)
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
