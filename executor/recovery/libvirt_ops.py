"""The libvirt operations recovery needs, on the executor's libvirt connection."""

from __future__ import annotations

from typing import Any

from novaops.executor.libvirt_access import DomainRecord, LibvirtConnection


class ConnectionDomainControl:
    """:class:`DomainControl` on the executor's :class:`LibvirtConnection`.

    It must share the gateway's connection: the test driver keeps one in-memory
    host per connection, so a second connection would not see (or make) the same
    changes. Until LibvirtGateway grows these operations this reaches into the
    connection's worker pool and lock (``_call``, ``_lock``, ``_close_locked``).
    """

    def __init__(self, connection: LibvirtConnection) -> None:
        self.connection = connection

    @property
    def uri(self) -> str:
        return self.connection.uri

    async def list_domains(self) -> list[DomainRecord]:
        return await self.connection.list_domains()

    async def domain_xml(self, name: str) -> str:
        def read(conn: Any) -> str:
            return str(conn.lookupByName(name).XMLDesc(0))

        return await self.connection._call(read)

    async def start_domain(self, name: str) -> None:
        def start(conn: Any) -> None:
            dom = conn.lookupByName(name)
            if dom.isActive() == 1:
                dom.destroy()
            dom.create()

        await self.connection._call(start)

    async def resume_domain(self, name: str) -> None:
        await self.connection._call(lambda conn: conn.lookupByName(name).resume())

    async def reconnect(self) -> None:
        connection = self.connection

        def reopen(_stale: Any) -> str:
            with connection._lock:
                connection._close_locked()
            return str(connection._connection().getURI())

        await connection._call(reopen)
