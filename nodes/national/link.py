"""An inter-city link between the national tier's sites, emulated on one machine: a TCP relay
per PostgreSQL member that holds every chunk for ``one_way`` seconds in each direction, so a
round trip through it takes ``2 * one_way`` more than loopback.

Why a relay and not ``tc qdisc ... netem`` between network namespaces: the kernel of the
project's own test host has no netem (``CONFIG_NET_SCH_NETEM`` is not set and it loads no
modules: ``tc`` answers "Specified qdisc kind is unknown"), so a netem link cannot be built
there.  The relay adds the delay where a synchronous commit pays it: a standby streams from the
leader through the leader's relay (Patroni's ``connect_address``), so WAL reaches the standby
``one_way`` late and its flush confirmation comes back ``one_way`` late.  Clients of a site
(idis, the load generator) connect to their member directly, as they would in one city.

Contracts: chunks keep their order in each direction; the delay is added to each chunk once
(pipelined: a stream's throughput is not limited by it); :attr:`DelayLink.one_way` may change
at any moment and applies to chunks read after it; :meth:`DelayLink.stop` closes every
listener and connection, any number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from nodes.processes import HOST

_CHUNK = 65536


class DelayLink:
    """Relays on loopback, one per target port, all sharing one delay."""

    def __init__(self, one_way: float = 0.0) -> None:
        self.one_way = one_way
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="idis-link", daemon=True
        )
        self._thread.start()
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: dict[int, int] = {}

    def connections(self, target_port: int) -> int:
        """Connections relayed to ``target_port`` now (a standby streaming through the link
        holds one): proof that the link is on the path it is meant to be on."""
        return self._open.get(target_port, 0)

    def relay(self, target_port: int) -> int:
        """Start a relay to ``HOST:target_port``; the loopback port it listens on."""
        future = asyncio.run_coroutine_threadsafe(self._serve(target_port), self._loop)
        return future.result(10)

    async def _serve(self, target_port: int) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, target_port)
            except OSError:
                writer.close()
                return
            self._open[target_port] = self.connections(target_port) + 1

            def closed(_: object) -> None:
                self._open[target_port] -= 1

            pumps = [self._pump(reader, up_writer), self._pump(up_reader, writer)]
            for n, pump in enumerate(pumps):
                task = asyncio.ensure_future(pump)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                if n == 1:
                    task.add_done_callback(closed)

        server = await asyncio.start_server(accept, HOST, 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy ``source`` to ``sink``, each chunk ``one_way`` seconds after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sink.write(data)
                await sink.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await source.read(_CHUNK)
                await queue.put((time.monotonic() + self.one_way, data))
                if not data:
                    break
            await delivery
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            delivery.cancel()
            sink.close()

    def stop(self) -> None:
        """Close every relay and connection and end the relays' thread.  Idempotent."""
        if not self._loop.is_running():
            return

        async def close() -> None:
            for server in self._servers:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
