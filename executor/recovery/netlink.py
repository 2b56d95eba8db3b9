"""Netlink behind one small interface, for network repair.

:class:`NetlinkLinks` is the real implementation on pyroute2, in this process's
network namespace or an existing named one (tests, and simulated nodes that have a
namespace of their own); unit tests use an in-memory :class:`LinkControl`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from novaops.executor.netns import iproute

NETNS_RUN_DIR = Path("/run/netns")
_IFF_UP = 0x1


class NetlinkUnavailable(Exception):
    """Netlink could not be used (the configured network namespace does not exist)."""


@dataclass(frozen=True)
class LinkState:
    """A network link: ``up`` is the administrative state, ``master`` the bridge index."""

    name: str
    index: int
    kind: str
    up: bool
    master: int | None


class LinkControl(Protocol):
    """The netlink operations network repair needs; OSError on a refused change."""

    async def links(self) -> dict[str, LinkState]: ...

    async def set_master(self, device: str, bridge: str) -> None: ...

    async def set_up(self, device: str) -> None: ...


class NetlinkLinks:
    """:class:`LinkControl` over pyroute2, in this process's namespace or a named one.

    A named namespace must already exist (``/run/netns/<name>``): it is never created.
    Each call opens and closes its own netlink socket on a worker thread, because
    pyroute2's synchronous API runs its own event loop and must not share ours.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _call(self, operation: Callable[[Any], Any]) -> Any:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if self.netns is not None:
            if not (NETNS_RUN_DIR / self.netns).exists():
                raise NetlinkUnavailable(f"network namespace {self.netns!r} does not exist")
            # Not IPRoute(netns=...): that forks, which gRPC's threads make unsafe.
            ipr = iproute(self.netns)
        else:
            ipr = IPRoute()
        try:
            return operation(ipr)
        except NetlinkError as exc:
            raise OSError(exc.code, os.strerror(exc.code) if exc.code > 0 else str(exc)) from None
        finally:
            ipr.close()

    async def links(self) -> dict[str, LinkState]:
        def read(ipr: Any) -> dict[str, LinkState]:
            found = {}
            for msg in ipr.get_links():
                name = msg.get("ifname")
                found[name] = LinkState(
                    name=name,
                    index=int(msg["index"]),
                    kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
                    up=bool(int(msg["flags"]) & _IFF_UP),
                    master=msg.get("master"),
                )
            return found

        result: dict[str, LinkState] = await asyncio.to_thread(self._call, read)
        return result

    async def set_master(self, device: str, bridge: str) -> None:
        def attach(ipr: Any) -> None:
            (index,) = ipr.link_lookup(ifname=device)
            (bridge_index,) = ipr.link_lookup(ifname=bridge)
            ipr.link("set", index=index, master=bridge_index)

        await asyncio.to_thread(self._call, attach)

    async def set_up(self, device: str) -> None:
        def up(ipr: Any) -> None:
            (index,) = ipr.link_lookup(ifname=device)
            ipr.link("set", index=index, state="up")

        await asyncio.to_thread(self._call, up)
