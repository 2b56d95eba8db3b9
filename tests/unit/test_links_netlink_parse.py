"""The RTM_GETLINK dump parser of executor/checks/links.py, on hand-built messages
(no netlink; the real dump: tests/integration/test_links_netlink_dump.py)."""

from __future__ import annotations

import errno
import struct

import pytest

from novaops.executor.checks import links as links_module
from novaops.executor.checks.links import (
    LinkInfo,
    RawLink,
    netlink_links,
    parse_datagram,
    parse_link,
)

pytestmark = pytest.mark.timeout(30)

SEQ = 7


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (the length excludes the padding)."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def ifinfo(index: int, flags: int) -> bytes:
    return struct.pack("=BxHiII", 0, 1, index, flags, 0)


def nlmsg(kind: int, payload: bytes, seq: int = SEQ) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), kind, 2, seq, 1234) + payload
    return raw + b"\0" * (-len(raw) % 4)


def link(index: int, flags: int, *attrs: bytes) -> bytes:
    return nlmsg(16, ifinfo(index, flags) + b"".join(attrs))


def name(text: str) -> bytes:
    return nla(3, text.encode() + b"\0")


def kind(text: str) -> bytes:
    return nla(18 | 0x8000, nla(1, text.encode() + b"\0"))  # nested: NLA_F_NESTED set


def master(index: int) -> bytes:
    return nla(10, struct.pack("=I", index))


DONE = nlmsg(3, struct.pack("=i", 0))


def parse(*messages: bytes) -> tuple[list[RawLink], bool]:
    found: list[RawLink] = []
    done = parse_datagram(memoryview(b"".join(messages)), SEQ, found)
    return found, done


def test_links_with_odd_name_lengths_nested_kind_and_master() -> None:
    found, done = parse(
        link(1, 0x1, name("lo")),  # 3-byte name: padded
        link(2, 0x0, nla(13, struct.pack("=I", 1500)), name("br0"), kind("bridge")),
        link(3, 0x1, name("vnet10"), master(2), kind("tun"), nla(7, b"\1\2\3\4\5\6")),
        DONE,
    )
    assert done
    assert found == [
        RawLink(1, "lo", "", 0, 1),
        RawLink(2, "br0", "bridge", 0, 0),
        RawLink(3, "vnet10", "tun", 2, 1),
    ]


def test_linkinfo_without_a_kind_and_kind_after_other_nested_attributes() -> None:
    data = nla(2, b"\0" * 5)  # IFLA_INFO_DATA-like, odd length
    found, done = parse(
        link(4, 0, name("x0"), nla(18 | 0x8000, data)),
        link(5, 0, name("x1"), nla(18 | 0x8000, data + nla(1, b"veth\0"))),
        link(6, 0, name("x2"), nla(18, nla(1, b"dummy"))),  # no NUL, no nested flag
    )
    assert not done  # no NLMSG_DONE yet: the reader waits for the next datagram
    assert [(raw.name, raw.kind) for raw in found] == [("x0", ""), ("x1", "veth"), ("x2", "dummy")]


def test_done_stops_and_other_sequences_and_types_are_skipped() -> None:
    found, done = parse(
        nlmsg(16, ifinfo(9, 0) + name("stale"), seq=SEQ - 1),
        nlmsg(1, b"\0" * 4),  # NLMSG_NOOP
        link(1, 1, name("lo")),
        DONE,
        link(2, 1, name("after")),
    )
    assert done and [raw.name for raw in found] == ["lo"]


def test_netlink_error_raises_its_errno_and_an_ack_ends_the_dump() -> None:
    with pytest.raises(OSError) as caught:
        parse(nlmsg(2, struct.pack("=i", -errno.EPERM) + b"\0" * 16))
    assert caught.value.errno == errno.EPERM
    assert parse(nlmsg(2, struct.pack("=i", 0) + b"\0" * 16)) == ([], True)


@pytest.mark.parametrize(
    "data",
    [
        link(1, 1, name("lo"))[:-3],  # message longer than the datagram
        b"\x08\0\0\0\x10\0\0\0\0\0\0\0\0\0\0\0",  # length 8 < header: would never advance
        struct.pack("=IHHII", 0, 16, 0, SEQ, 0),  # length 0
        b"\x01\x02\x03",  # not even a header
        nlmsg(2, b"\0\0"),  # error message without its errno
    ],
)
def test_truncated_or_garbage_messages_raise_ebadmsg(data: bytes) -> None:
    with pytest.raises(OSError) as caught:
        parse(data)
    assert caught.value.errno == errno.EBADMSG


def test_garbage_attribute_lengths_stop_that_links_attributes() -> None:
    bad_zero = struct.pack("=HH", 0, 3)  # length 0: would loop forever
    bad_long = struct.pack("=HH", 200, 3)  # past the message end
    found, done = parse(
        link(1, 1, name("a0"), bad_zero, kind("bridge")),
        link(2, 1, name("b0"), bad_long),
        link(3, 1, name("c0"), nla(18, struct.pack("=HH", 1, 1)), master(1)),
        DONE,
    )
    assert done
    assert found == [
        RawLink(1, "a0", "", 0, 1),
        RawLink(2, "b0", "", 0, 1),
        RawLink(3, "c0", "", 1, 1),
    ]


def test_short_payloads() -> None:
    assert parse_link(memoryview(b"\0" * 15), 0, 15) is None
    assert parse_link(memoryview(ifinfo(5, 1) + b"\0\0"), 0, 18) == RawLink(5, "", "", 0, 1)
    # IFLA_MASTER too short for its u32: ignored
    assert parse_link(memoryview(ifinfo(5, 1) + nla(10, b"\1\0")), 0, 24) == RawLink(
        5, "", "", 0, 1
    )


def test_netlink_links_maps_masters_and_sorts(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = [
        RawLink(3, "vnet0", "tun", 2, 1),
        RawLink(1, "lo", "", 0, 0x49),
        RawLink(2, "br0", "bridge", 0, 0),
        RawLink(4, "orphan0", "", 99, 1),
    ]
    monkeypatch.setattr(links_module, "dump_links", lambda netns=None: raw)
    assert netlink_links() == [
        LinkInfo("br0", "bridge", "", False),
        LinkInfo("lo", "", "", True),
        LinkInfo("orphan0", "", "", True),  # master not among the links: none
        LinkInfo("vnet0", "tun", "br0", True),
    ]


def test_request_layout() -> None:
    request = links_module._request(42)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq, pid) == (len(request), 18, 0x301, 42, 0)
    assert len(request) % 4 == 0
    assert struct.unpack_from("=HHI", request, 32) == (8, 29, 0)  # IFLA_EXT_MASK = 0
