"""Identifiers a host reveals about itself, read through its HostRoot.

The scrub detectors find identifiers by shape and context; a bare user or host
name (``alice``, ``compute-07``) has neither, so the Redactor is also told the
names this host is known to use: login accounts from /etc/passwd (uid >= 1000),
its /etc/hostname, and the non-loopback names in /etc/hosts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from novaops.executor.hostroot import HostRoot

# Debian/Red Hat convention: uids below this are system accounts.
_FIRST_LOGIN_UID = 1000
_NOBODY_UID = 65534


@dataclass(frozen=True)
class HostIdentifiers:
    """Names to pseudonymize by value (users, hosts) and accounts never to touch.

    own_names: what the host calls itself (/etc/hostname, and its short form).
    """

    users: frozenset[str] = field(default_factory=frozenset)
    hosts: frozenset[str] = field(default_factory=frozenset)
    system_users: frozenset[str] = field(default_factory=frozenset)
    own_names: frozenset[str] = field(default_factory=frozenset)


def parse_passwd(text: str) -> tuple[set[str], set[str]]:
    """(login users, system users) from /etc/passwd content; bad lines are skipped."""
    users: set[str] = set()
    system: set[str] = set()
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[0] or line.startswith("#"):
            continue
        try:
            uid = int(fields[2])
        except ValueError:
            continue
        if uid >= _FIRST_LOGIN_UID and uid != _NOBODY_UID:
            users.add(fields[0])
        else:
            system.add(fields[0])
    return users, system


def parse_hosts(text: str) -> set[str]:
    """Host names of /etc/hosts entries whose address is not loopback."""
    names: set[str] = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or fields[0].startswith(("127.", "::1", "fe00:", "ff0")):
            continue
        for name in fields[1:]:
            names.add(name)
            names.add(name.split(".", 1)[0])
    return names


def host_identifiers(root: HostRoot) -> HostIdentifiers:
    """What root's /etc says about its users and names; missing files give nothing."""
    users: set[str] = set()
    system: set[str] = set()
    own: set[str] = set()
    hosts: set[str] = set()
    with contextlib.suppress(OSError):
        users, system = parse_passwd(root.read_text("/etc/passwd"))
    try:
        hostname = root.read_text("/etc/hostname").strip()
        if hostname:
            own.update(name_forms(hostname))
    except OSError:
        pass
    with contextlib.suppress(OSError):
        hosts.update(parse_hosts(root.read_text("/etc/hosts")))
    hosts |= own
    return HostIdentifiers(frozenset(users), frozenset(hosts), frozenset(system), frozenset(own))


def name_forms(name: str) -> set[str]:
    """A host name and its short form (its first label): ``a.b.c`` -> {a.b.c, a}."""
    return {name, name.split(".", 1)[0]} if name else set()
