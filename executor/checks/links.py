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
blocking snapshot. Netlink reads are a lean RTM_GETLINK dump on a raw socket
opened for the call (:func:`netlink_links`): only the four fields a LinkInfo
needs are decoded, instead of pyroute2 decoding every attribute of every link
(~200 µs per link). Opening the socket costs a few µs, so nothing is kept open
between calls.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import NamedTuple

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


# -- the RTM_GETLINK dump ----------------------------------------------------------------

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED (0x8000) and NLA_F_NET_BYTEORDER (0x4000)
RECV_BUFFER = 65536  # the kernel fills a dump datagram up to ~32 KiB
DUMP_TIMEOUT = 10.0  # seconds a recv may wait for the kernel's next datagram

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_NLA = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_seq = itertools.count(1)


class RawLink(NamedTuple):
    """What one RTM_NEWLINK message says about a link (master: ifindex, 0 if none)."""

    ifindex: int
    name: str
    kind: str
    master: int
    flags: int


def _nla_align(length: int) -> int:
    return (length + 3) & ~3


def _string(data: memoryview, start: int, end: int) -> str:
    raw = bytes(data[start:end])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _info_kind(data: memoryview, pos: int, end: int) -> str:
    """IFLA_INFO_KIND inside a nested IFLA_LINKINFO payload [pos, end); "" if absent."""
    while pos + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < _NLA.size or pos + length > end:
            break  # garbage length: stop
        if kind & NLA_TYPE_MASK == IFLA_INFO_KIND:
            return _string(data, pos + _NLA.size, pos + length)
        pos += _nla_align(length)
    return ""


def parse_link(data: memoryview, pos: int, end: int) -> RawLink | None:
    """One RTM_NEWLINK payload (ifinfomsg + attributes) in data[pos:end]; None if too short.

    Attributes are read up to the first one whose length is impossible (the
    fields found before it are kept).
    """
    if end - pos < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, pos)
    pos += _IFINFOMSG.size
    name = kind = ""
    master = 0
    while pos + _NLA.size <= end:
        length, attr = _NLA.unpack_from(data, pos)
        if length < _NLA.size or pos + length > end:
            break
        attr &= NLA_TYPE_MASK
        body = pos + _NLA.size
        if attr == IFLA_IFNAME:
            name = _string(data, body, pos + length)
        elif attr == IFLA_MASTER and length >= _NLA.size + _U32.size:
            master = _U32.unpack_from(data, body)[0]
        elif attr == IFLA_LINKINFO:
            kind = _info_kind(data, body, pos + length)
        pos += _nla_align(length)
    return RawLink(index, name, kind, master, flags)


def parse_datagram(data: memoryview, seq: int, links: list[RawLink]) -> bool:
    """Append the links of one received datagram; True once NLMSG_DONE was seen.

    Raises OSError: errno of an NLMSG_ERROR, EBADMSG for a message whose length
    does not fit the datagram (the dump cannot be trusted any more). Messages of
    another sequence number are skipped.
    """
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < _NLMSGHDR.size:
            raise OSError(errno.EBADMSG, "truncated netlink message header")
        length, kind, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > end:
            raise OSError(errno.EBADMSG, f"netlink message length {length} does not fit")
        body = pos + _NLMSGHDR.size
        if msg_seq == seq:
            if kind == NLMSG_DONE:
                return True
            if kind == NLMSG_ERROR:
                if length < _NLMSGHDR.size + _I32.size:
                    raise OSError(errno.EBADMSG, "truncated netlink error message")
                error = -_I32.unpack_from(data, body)[0]
                if error:
                    raise OSError(error, os.strerror(error))
                return True  # an acknowledgement: nothing follows
            if kind == RTM_NEWLINK:
                link = parse_link(data, body, pos + length)
                if link is not None:
                    links.append(link)
        pos += _nla_align(length)
    return False


def _request(seq: int) -> bytes:
    ext_mask = _NLA.pack(_NLA.size + _U32.size, IFLA_EXT_MASK) + _U32.pack(0)
    payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + ext_mask
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(payload), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + payload


def _open_socket(netns: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in netns (this thread's namespace when None)."""
    from novaops.executor.netns import entered

    def make() -> socket.socket:
        return socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )

    if netns is None:
        return make()
    with entered(netns):  # the socket stays bound to the namespace it was made in
        return make()


def dump_links(netns: str | None = None) -> list[RawLink]:
    """Every link of the namespace, in the kernel's order: one RTM_GETLINK dump."""
    seq = next(_seq) & 0xFFFFFFFF
    with _open_socket(netns) as sock:
        sock.settimeout(DUMP_TIMEOUT)
        sock.sendto(_request(seq), (0, 0))
        buffer = bytearray(RECV_BUFFER)
        view = memoryview(buffer)
        links: list[RawLink] = []
        while True:
            size = sock.recv_into(buffer, RECV_BUFFER, socket.MSG_TRUNC)
            if size > RECV_BUFFER:
                raise OSError(errno.EMSGSIZE, f"netlink datagram of {size} bytes truncated")
            if size == 0:
                raise OSError(errno.EBADMSG, "empty netlink datagram")
            if parse_datagram(view[:size], seq, links):
                return links


def netlink_links(netns: str | None = None) -> list[LinkInfo]:
    """Every link of a namespace (the current one when netns is None), sorted by name.

    On a netlink socket opened for the call. Raises NetnsError (an OSError) for a
    missing namespace, OSError for a socket or dump failure.
    """
    raw = dump_links(netns)
    names = {link.ifindex: link.name for link in raw}
    links = [
        LinkInfo(
            name=link.name,
            kind=link.kind,
            master=names.get(link.master, "") if link.master else "",
            up=bool(link.flags & IFF_UP),
        )
        for link in raw
    ]
    return sorted(links, key=lambda link: link.name)


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
