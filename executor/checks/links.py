"""Network links of a node (name, kind, bridge master), from netlink or from sysfs.

Which source a node uses (decided here, see :func:`links_for_node`):

* a named network namespace was configured for the node → netlink inside it;
* the host root is ``/`` → netlink in the executor's own namespace (production);
* a simulated host root that has ``sys/class/net`` → that tree, read through the
  :class:`~novaops.executor.hostroot.HostRoot` (``<tap>/master`` resolves to the
  bridge's folder, ``tun_flags`` marks a tap, ``bridge/`` marks a bridge) —
  simulated nodes sharing one namespace then never see each other's taps;
* otherwise → netlink in the executor's own namespace.

Both sources return the same :class:`LinkInfo` values; each call is one
blocking snapshot. Netlink reads reuse a socket per worker thread and namespace
(:func:`novaops.executor.netns.call_cached`): each call is still a fresh dump;
:func:`close_link_sockets` closes those sockets (executor shutdown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from novaops.executor.hostroot import HostRoot

SYS_CLASS_NET = "/sys/class/net"
IFF_UP = 0x1

LinkSource = Callable[[], list["LinkInfo"]]


@dataclass(frozen=True)
class LinkInfo:
    """One link: ``kind`` is the rtnetlink kind ("bridge", "tun", "veth", ...; "" if none)."""

    name: str
    kind: str = ""
    master: str = ""
    up: bool = False


def _attr(msg: Any, name: str) -> Any:
    value = msg.get_attr(name) if msg is not None else None
    return value


def _dump_links(ipr: Any) -> list[Any]:
    return list(ipr.get_links())


def netlink_links(netns: str | None = None) -> list[LinkInfo]:
    """Every link of a namespace (the current one when netns is None), via pyroute2.

    On a kept-open socket (replaced when the namespace changed or a read on it
    failed); raises what a socket opened for the call would: NetnsError (an
    OSError) for a missing namespace, OSError or NetlinkError from the dump.
    """
    from novaops.executor.netns import call_cached

    raw = call_cached(netns, _dump_links)
    names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw}
    links = []
    for msg in raw:
        info = _attr(msg, "IFLA_LINKINFO")
        master_index = msg.get_attr("IFLA_MASTER")
        links.append(
            LinkInfo(
                name=str(msg.get_attr("IFLA_IFNAME")),
                kind=str(_attr(info, "IFLA_INFO_KIND") or ""),
                master=str(names.get(master_index, "")) if master_index else "",
                up=bool(msg["flags"] & IFF_UP),
            )
        )
    return sorted(links, key=lambda link: link.name)


def close_link_sockets() -> int:
    """Close every netlink socket kept open for link reads, in all threads; how many.

    Later reads open new ones, so it is safe while other executors of the process
    still read. Blocking; from async code prefer ``await asyncio.to_thread(...)``.
    """
    from novaops.executor.netns import close_cached

    return close_cached()


def sysfs_links(root: HostRoot) -> list[LinkInfo]:
    """Every link under the host root's /sys/class/net (missing folder → no links)."""
    try:
        names = root.list_dir(SYS_CLASS_NET)
    except OSError:
        return []
    links = []
    for name in names:
        base = f"{SYS_CLASS_NET}/{name}"
        master = ""
        if root.exists(f"{base}/master"):
            try:
                master = PurePosixPath(root.resolve(f"{base}/master")).name
            except OSError:
                master = ""
        if root.is_dir(f"{base}/bridge"):
            kind = "bridge"
        elif root.exists(f"{base}/tun_flags"):
            kind = "tun"
        else:
            kind = _uevent_devtype(root, base)
        try:
            flags = int(root.read_text(f"{base}/flags").strip(), 16)
        except (OSError, ValueError):
            flags = 0
        links.append(LinkInfo(name=name, kind=kind, master=master, up=bool(flags & IFF_UP)))
    return links


def _uevent_devtype(root: HostRoot, base: str) -> str:
    try:
        text = root.read_text(f"{base}/uevent")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVTYPE":
            return value.strip()
    return ""


def links_for_node(root: HostRoot, netns: str | None = None) -> LinkSource:
    """The link source for a node, chosen by the rules in the module docstring."""
    if netns is not None or root.is_system_root or not root.is_dir(SYS_CLASS_NET):
        return lambda: netlink_links(netns)
    return lambda: sysfs_links(root)
