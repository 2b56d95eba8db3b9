#!/usr/bin/env python3
"""A generated hypervisor host tree with seeded secrets and identifiers of every kind.

    python bench/logtree.py DEST --mb 50          # writes the tree, prints a summary

Used by the redaction and bundle benchmarks and by the tests. The tree looks like
what the node bundle collectors read (``var/log/syslog``, ``auth.log``,
``libvirt/libvirtd.log``, per-domain QEMU logs, nova-compute-like and Open vSwitch
logs, container logs, ``etc/nova/nova.conf`` ...). Most lines are realistic filler
drawn from pools (with their own addresses, MACs, users and host names, so a
``--scrub`` run has real work to do); a known number of lines carry a *seeded*
value of one kind each, recorded in :attr:`LogTree.seeds` with file and line.

Recall of a redactor = seeded values absent from its output / seeded values.
:func:`survivors` checks a redacted copy of the tree (same relative paths).
Deterministic for a given ``seed`` and size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

NOW_DAY = "2025-03-10"
SYSLOG_DAY = "Mar 10"
MB = 1024 * 1024
# No single fixed-path log grows past this; the rest goes to globbed folders
# (nova/*.log, qemu/*.log, containers/*.log), so the default 64 MiB per-file cap
# of a node bundle never truncates the tree.
FILE_CAP = 40 * MB
NODE_HOSTNAME = "hv-node-b"

SECRET_SEED_KINDS = (
    "password",
    "config_password",
    "url_password",
    "authorization",
    "bearer_token",
    "cookie",
    "session",
    "jwt",
    "aws_access_key_id",
    "aws_secret_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "slack_webhook",
    "gcp_api_key",
    "openstack_token",
    "stripe_key",
    "qemu_secret",
    "private_key",
)
IDENTIFIER_SEED_KINDS = (
    "ipv4",
    "ipv6",
    "mac",
    "hostname",
    "short_hostname",
    "domain",
    "username",
    "email",
)
SEED_KINDS = SECRET_SEED_KINDS + IDENTIFIER_SEED_KINDS


@dataclass(frozen=True)
class Seed:
    """One planted value: its kind, the value, the file (relative) and line index."""

    kind: str
    value: str
    path: str
    line: int  # 0-based line index in the file; -1 when the file's lines shift (PEM)


@dataclass
class LogTree:
    root: Path
    seeds: list[Seed] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # relative paths of every file
    log_bytes: int = 0  # bytes under var/ (the logs)
    total_bytes: int = 0
    users: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)

    def seed_counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.seeds))


# ------------------------------------------------------------------ random values

_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"
_URLSAFE = _ALNUM + "-_"
_FIRST = ("alice", "bruno", "chen", "dana", "emeka", "fatima", "goran", "hana", "ivan", "jules")
_LAST = ("martin", "okafor", "silva", "novak", "tanaka", "weber", "haddad", "kowal", "lind")
_WORDS = ("db", "mq", "ceph", "ctl", "api", "web", "store", "gw", "mon", "lb", "vault")
_CUSTOMERS = ("globex", "initech", "umbrella", "hooli", "soylent", "tyrell", "wonka")


class _Values:
    """Unique random values of each kind (never reused, so a survivor is unambiguous)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _unique(self, make: Callable[[], str]) -> str:
        while True:
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value

    def s(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choices(alphabet, k=n))

    def hexs(self, n: int) -> str:
        return self.s("0123456789abcdef", n)

    def make(self, kind: str) -> str:
        r = self.rng
        makers: dict[str, Callable[[], str]] = {
            "password": lambda: "Pw" + self.s(_ALNUM + "!#%*", 12),
            "config_password": lambda: "Cf" + self.s(_ALNUM + "!#%*", 12),
            "url_password": lambda: "Ur" + self.s(_ALNUM, 14),
            "authorization": lambda: "QmFz" + self.s(_B64, 20) + "==",
            "bearer_token": lambda: "Bt" + self.s(_URLSAFE, 30),
            "cookie": lambda: "Ck" + self.s(_ALNUM, 22),
            "session": lambda: "SID" + self.s("0123456789ABCDEF", 24),
            "jwt": lambda: (
                "eyJhbGciOiJSUzI1NiJ9." + self.s(_URLSAFE, 40) + "." + self.s(_URLSAFE, 43)
            ),
            "aws_access_key_id": lambda: "AKIA" + self.s(string.ascii_uppercase + "234567", 16),
            "aws_secret_key": lambda: self.s(_B64, 40),
            "github_token": lambda: "ghp_" + self.s(_ALNUM, 36),
            "gitlab_token": lambda: "glpat-" + self.s(_URLSAFE, 20),
            "slack_token": lambda: f"xoxb-{r.randint(10**11, 10**12)}-" + self.s(_ALNUM, 24),
            "slack_webhook": lambda: (
                "T0" + self.s(_ALNUM, 7) + "/B0" + self.s(_ALNUM, 7) + "/" + self.s(_ALNUM, 24)
            ),
            "gcp_api_key": lambda: "AIza" + self.s(_URLSAFE, 35),
            "openstack_token": lambda: "gAAAAAB" + self.s(_URLSAFE, 93) + "==",
            "stripe_key": lambda: "sk_live_" + self.s(_ALNUM, 24),
            "qemu_secret": lambda: "Qs" + self.s(_B64, 22) + "==",
            "private_key": lambda: "MIIEow" + self.s(_B64, 58),
            "ipv4": lambda: f"172.{r.randint(20, 30)}.{r.randint(0, 255)}.{r.randint(100, 254)}",
            "ipv6": lambda: (
                f"fd{self.hexs(2)}:{self.hexs(4)}:{self.hexs(4)}:"
                f"{r.randint(1, 0xFFFF):x}::{r.randint(0x100, 0xFFFF):x}"
            ),
            "mac": lambda: "52:54:00:" + ":".join(self.hexs(2) for _ in range(3)),
            "hostname": lambda: (
                f"{r.choice(_WORDS)}-{r.randint(100, 999)}."
                f"{self.s(string.ascii_lowercase, 3)}{r.randint(1, 9)}."
                f"{r.choice(_CUSTOMERS)}-corp.com"
            ),
            "short_hostname": lambda: (
                "hv" + self.s(string.ascii_lowercase, 4) + str(r.randint(10, 99))
            ),
            "domain": lambda: f"{r.choice(_CUSTOMERS)}-{self.s(string.ascii_lowercase, 5)}.io",
            "username": lambda: (
                r.choice(_FIRST)[:3] + self.s(string.ascii_lowercase, 3) + str(r.randint(10, 99))
            ),
            "email": lambda: (
                f"{r.choice(_FIRST)}.{r.choice(_LAST)}{r.randint(100, 999)}"
                f"@{r.choice(_CUSTOMERS)}-mail.com"
            ),
        }
        return self._unique(makers[kind])


# ------------------------------------------------------------ filler line pools


@dataclass(frozen=True)
class _Population:
    """Identifiers the filler lines reuse (like a real host talks to few peers)."""

    ips: tuple[str, ...]
    macs: tuple[str, ...]
    users: tuple[str, ...]
    peers: tuple[str, ...]
    uuids: tuple[str, ...]


def _population(rng: random.Random) -> _Population:
    def hexs(n: int) -> str:
        return "".join(rng.choices("0123456789abcdef", k=n))

    return _Population(
        ips=tuple(f"10.0.{rng.randint(0, 7)}.{rng.randint(2, 250)}" for _ in range(48)),
        macs=tuple("fa:16:3e:" + ":".join(hexs(2) for _ in range(3)) for _ in range(32)),
        users=("opsadmin", "deploy", "jenkins", "monitor", "backup"),
        peers=tuple(f"ctl{i}.dc1.acme-corp.com" for i in range(1, 4)),
        uuids=tuple(f"{hexs(8)}-{hexs(4)}-{hexs(4)}-{hexs(4)}-{hexs(12)}" for _ in range(24)),
    )


def _t(rng: random.Random) -> tuple[int, int, int, int]:
    return rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999)


def _syslog_ts(rng: random.Random) -> str:
    h, m, s, _ = _t(rng)
    return f"{SYSLOG_DAY} {h:02d}:{m:02d}:{s:02d} {NODE_HOSTNAME}"


def _iso_ts(rng: random.Random, sep: str = " ") -> str:
    h, m, s, us = _t(rng)
    return f"{NOW_DAY}{sep}{h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}"


def _syslog_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    pid = rng.randint(300, 40000)
    msgs = (
        f"kernel: [{rng.randint(1, 99999)}.{rng.randint(0, 999999):06d}] br0: port "
        f"{rng.randint(1, 9)}(tap{c(p.uuids)[:11]}) entered forwarding state",
        f"dnsmasq-dhcp[{pid}]: DHCPACK(br0) {c(p.ips)} {c(p.macs)} instance-{pid:08x}",
        f"systemd[1]: Started Session {pid} of User {c(p.users)}.",
        "systemd[1]: libvirtd.service: Succeeded.",
        f"NetworkManager[{pid}]: <info>  [{rng.randint(10**9, 2 * 10**9)}.{pid}] device (tap0): "
        f"state change: ip-config -> secondaries (reason 'none')",
        f"ovs-vsctl: ovs|00001|vsctl|INFO|Called as ovs-vsctl --timeout=120 -- --if-exists "
        f"del-port tap{c(p.uuids)[:11]}",
        f"chronyd[{pid}]: Selected source {c(p.ips)} (ntp.ubuntu.com)",
        f"CRON[{pid}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
        f"kernel: [{rng.randint(1, 99999)}.{rng.randint(0, 999999):06d}] kvm [{pid}]: "
        f"vcpu0, guest rIP: 0xffffffff{rng.randint(0, 2**32):08x} disabled perfctr wrmsr",
        f"nova-compute[{pid}]: INFO oslo.messaging._drivers.impl_rabbit [-] Reconnected to AMQP "
        f"server on {c(p.peers)}:5672 via [amqp] client with port {rng.randint(30000, 60000)}.",
    )
    return f"{_syslog_ts(rng)} {c(msgs)}"


def _auth_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    pid = rng.randint(300, 40000)
    msgs = (
        f"sshd[{pid}]: Accepted publickey for {c(p.users)} from {c(p.ips)} port "
        f"{rng.randint(30000, 60000)} ssh2: ED25519 SHA256:{''.join(rng.choices(_B64, k=43))}",
        f"sshd[{pid}]: pam_unix(sshd:session): session opened for user {c(p.users)}(uid=1001) "
        f"by (uid=0)",
        f"sudo:   {c(p.users)} : TTY=pts/{rng.randint(0, 9)} ; PWD=/home/{c(p.users)} ; "
        f"USER=root ; COMMAND=/usr/bin/virsh list --all",
        f"systemd-logind[{pid}]: New session {pid} of user {c(p.users)}.",
        f"CRON[{pid}]: pam_unix(cron:session): session closed for user root",
    )
    return f"{_syslog_ts(rng)} {c(msgs)}"


def _libvirtd_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    pid = rng.randint(1000, 9999)
    msgs = (
        f"info : virObjectRef:400 : OBJECT_REF: obj=0x7f{rng.randint(0, 2**40):010x}",
        f"debug : virDomainObjListFindByUUID:{rng.randint(100, 999)} : uuid={c(p.uuids)}",
        "error : virNetSocketReadWire:1793 : End of file while reading data: Input/output error",
        f"info : qemuMonitorIOWrite:{rng.randint(100, 999)} : QEMU_MONITOR_IO_WRITE: "
        f'mon=0x7f{rng.randint(0, 2**40):010x} buf={{"execute":"query-balloon","id":"libvirt-'
        f'{rng.randint(1, 9999)}"}}',
        f"warning : qemuDomainObjTaint:{rng.randint(100, 999)} : Domain id={rng.randint(1, 99)} "
        f"name='instance-{rng.randint(1, 999):08x}' uuid={c(p.uuids)} is tainted: high-privileges",
        f"debug : virNetServerClientNew:{rng.randint(100, 999)} : client=0x55{pid:08x} "
        f"sock=0x55{pid:08x} addr={c(p.ips)};{rng.randint(30000, 60000)}",
        f"info : virNetDevTapCreate:{rng.randint(100, 999)} : created tap{c(p.uuids)[:11]} "
        f"mac={c(p.macs)}",
    )
    return f"{_iso_ts(rng)}+0000: {pid}: {c(msgs)}"


def _qemu_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    msgs = (
        f"{_iso_ts(rng, 'T')}Z qemu-system-x86_64: terminating on signal 15 from pid "
        f"{rng.randint(1000, 9999)} (/usr/sbin/libvirtd)",
        f"char device redirected to /dev/pts/{rng.randint(0, 30)} (label charserial0)",
        f"{_iso_ts(rng)}+0000: shutting down, reason=shutdown",
        f"LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin HOME=/var/lib/libvirt/"
        f"qemu/domain-{rng.randint(1, 99)} /usr/bin/qemu-system-x86_64 -name guest=instance-"
        f"{rng.randint(1, 999):08x},debug-threads=on -machine pc-q35-7.2,usb=off -m 4096 "
        f"-netdev tap,fd=34,id=hostnet0,vhost=on -device virtio-net-pci,netdev=hostnet0,"
        f"id=net0,mac={c(p.macs)},bus=pci.1,addr=0x0 -vnc {c(p.ips)}:0 -uuid {c(p.uuids)}",
        f"{_iso_ts(rng, 'T')}Z qemu-system-x86_64: warning: host doesn't support requested "
        f"feature: CPUID.80000001H:ECX.svm [bit 2]",
    )
    return c(msgs)


def _nova_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    req = f"[req-{c(p.uuids)} {c(p.uuids)[:32]} {c(p.uuids)[:32]} - default default]"
    msgs = (
        f"INFO nova.compute.manager {req} [instance: {c(p.uuids)}] Took "
        f"{rng.randint(1, 60)}.{rng.randint(0, 99):02d} seconds to spawn the instance on the "
        "hypervisor.",
        f'DEBUG oslo_concurrency.lockutils {req} Lock "compute_resources" acquired by '
        f'"nova.compute.resource_tracker.ResourceTracker._update_available_resource" :: '
        f"waited 0.000s inner /usr/lib/python3/dist-packages/oslo_concurrency/lockutils.py:386",
        f"INFO nova.compute.resource_tracker [-] Final resource view: name={NODE_HOSTNAME} "
        f"phys_ram={rng.randint(64, 512) * 1024}MB used_ram={rng.randint(1, 64) * 1024}MB "
        f"phys_disk=1862GB used_disk=120GB total_vcpus=64 used_vcpus={rng.randint(0, 64)} "
        "pci_stats=[]",
        f"DEBUG nova.virt.libvirt.driver {req} [instance: {c(p.uuids)}] Instance network_info: "
        f'|[{{"id": "{c(p.uuids)}", "address": "{c(p.macs)}", "network": {{"subnets": '
        f'[{{"cidr": "10.0.0.0/21", "ips": [{{"address": "{c(p.ips)}", "type": "fixed"}}]}}]}}, '
        f'"devname": "tap{c(p.uuids)[:11]}", "ovs_interfaceid": "{c(p.uuids)}"}}]|',
        f"DEBUG keystoneauth.session {req} RESP: [200] Content-Type: application/json "
        f"Content-Length: {rng.randint(100, 9999)} x-openstack-request-id: req-{c(p.uuids)} "
        "_http_log_response",
        f"WARNING nova.compute.manager [-] While synchronizing instance power states, found "
        f"{rng.randint(1, 40)} instances in the database and {rng.randint(1, 40)} instances on "
        "the hypervisor.",
        f"DEBUG nova.compute.manager {req} Triggering sync for uuid {c(p.uuids)} "
        "_sync_power_states",
        f"INFO nova.virt.libvirt.imagecache [-] image {c(p.uuids)} at (/var/lib/nova/instances/"
        f"_base/{c(p.uuids).replace('-', '')[:40]}): checking",
    )
    return f"{_iso_ts(rng)} {rng.randint(1000, 9999)} {c(msgs)}"


def _ovs_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    msgs = (
        f"bridge|INFO|bridge br-int: added interface tap{c(p.uuids)[:11]} on port "
        f"{rng.randint(1, 200)}",
        f"connmgr|INFO|br-int<->tcp:127.0.0.1:6633: {rng.randint(1, 99)} flow_mods in the last "
        "59 s (3 adds)",
        "rconn|INFO|br-tun<->tcp:127.0.0.1:6633: connected",
        f"ofproto_dpif_xlate(handler{rng.randint(1, 8)})|WARN|Dropped {rng.randint(1, 99)} log "
        f"messages in last 60 seconds due to excessive rate",
        f"tunnel(revalidator{rng.randint(1, 8)})|INFO|vxlan_sys_4789: remote_ip={c(p.ips)}",
    )
    return f"{_iso_ts(rng, 'T')}Z|{rng.randint(1, 99999):05d}|{c(msgs)}"


def _container_line(rng: random.Random, p: _Population) -> str:
    c = rng.choice
    msgs = (
        f'level=info msg="GET /healthz" remote={c(p.ips)}:{rng.randint(30000, 60000)} '
        f"status=200 took={rng.randint(1, 999)}us",
        f'level=warning msg="retrying connection to {c(p.peers)}:9092" attempt={rng.randint(1, 9)}',
        f'{{"ts":"{_iso_ts(rng, "T")}Z","level":"info","msg":"reconciled",'
        f'"object":"{c(p.uuids)}","duration_ms":{rng.randint(1, 999)}}}',
    )
    return f"{_iso_ts(rng, 'T')}{rng.randint(0, 999):03d}Z stdout F {c(msgs)}"


def _docker_line(rng: random.Random, p: _Population) -> str:
    msg = _container_line(rng, p).split(" F ", 1)[1]
    return json.dumps({"log": msg + "\n", "stream": "stdout", "time": f"{_iso_ts(rng, 'T')}Z"})


_LineMaker = Callable[[random.Random, _Population], str]

# ---------------------------------------------------------------- seeded lines


def _seed_line(kind: str, value: str, style: str, rng: random.Random) -> str:
    """A line of a log of this style carrying value (the only seeded value on it)."""
    pid = rng.randint(1000, 9999)
    bodies: dict[str, str] = {
        "password": rng.choice(
            (
                f"DEBUG nova.api {{'username': 'svc', 'password': '{value}'}} _get_credentials",
                f"login attempt password={value} rejected",
                f"cmd: mysqladmin --user=nova --password {value} status",
            )
        ),
        "config_password": f"config reload: admin_password = {value}",
        "url_password": f"connecting to rabbit://nova:{value}@ctl1.dc1.acme-corp.com:5672/nova",
        "authorization": f'REQ: curl -g -i -X GET http://ctl2:8774/v2.1 -H "Authorization: '
        f'Basic {value}"',
        "bearer_token": f"webhook call failed: token type bearer {value} expired",
        "cookie": f"HTTP request header Cookie: sessionid={value}; csrftoken=abc",
        "session": f"GET /console?JSESSIONID={value} 200",
        "jwt": f"oidc: validated id token {value} for client nova",
        "aws_access_key_id": f"s3 backup using access key {value} to bucket backups",
        "aws_secret_key": f"env AWS_SECRET_ACCESS_KEY={value} aws s3 cp",
        "github_token": f"git clone https://{value}@github.com/acme/infra.git",
        "gitlab_token": f"ci: using registry token {value}",
        "slack_token": f"notify: slack client {value} posting to #ops",
        "slack_webhook": f"alert sent to https://hooks.slack.com/services/{value}",
        "gcp_api_key": f"maps client key={value} quota ok",
        "openstack_token": f"DEBUG keystoneauth.session REQ: curl -g -i -X GET http://ctl1:9696 "
        f'-H "X-Auth-Token: {value}"',
        "stripe_key": f"billing exporter started with {value}",
        "qemu_secret": f"-object secret,id=masterKey0,format=raw,data={value} -machine q35",
        "ipv4": rng.choice(
            (
                f"sshd[{pid}]: Connection closed by {value} port 51234 [preauth]",
                f"DHCPACK(br0) {value} fa:16:3e:00:00:01 guest",
                f"remote client addr={value};5900",
            )
        ),
        "ipv6": rng.choice(
            (f"inet6 {value}/64 scope global dynamic br0", f"neighbour [{value}]:22 reachable")
        ),
        "mac": rng.choice(
            (f"link/ether {value} brd ff:ff:ff:ff:ff:ff", f"<mac address='{value}'/>")
        ),
        "hostname": rng.choice(
            (f"migration to {value}:16509 started", f"ceph: mon {value} is down")
        ),
        "short_hostname": f"live migration peer {value} acknowledged",
        "domain": f"search domain {value} added to resolv.conf",
        "username": rng.choice(
            (
                f"sshd[{pid}]: Accepted publickey for {value} from 10.0.0.9 port 40022 ssh2",
                f"sshd[{pid}]: Failed password for invalid user {value} from 10.0.0.9 port 22",
                f"sudo:   {value} : TTY=pts/1 ; PWD=/root ; USER=root ; COMMAND=/bin/ls",
                f"audit: user={value} op=login res=success",
                f"cwd=/home/{value}/deploy exe=/usr/bin/virsh",
            )
        ),
        "email": f"report mailed to <{value}> by cron",
    }
    body = bodies[kind]
    if style == "syslog" or style == "auth":
        return f"{_syslog_ts(rng)} {body}"
    if style == "libvirtd":
        return f"{_iso_ts(rng)}+0000: {pid}: info : {body}"
    if style == "nova":
        return f"{_iso_ts(rng)} {pid} INFO nova.compute.manager [-] {body}"
    if style == "docker":
        return json.dumps({"log": body + "\n", "stream": "stderr", "time": f"{_iso_ts(rng, 'T')}Z"})
    if style == "ovs":
        return f"{_iso_ts(rng, 'T')}Z|{pid:05d}|vlog|INFO|{body}"
    if style == "container":
        return f"{_iso_ts(rng, 'T')}000Z stderr F {body}"
    return body  # qemu


@dataclass(frozen=True)
class _FileSpec:
    path: str
    style: str
    maker: _LineMaker
    share: float
    splittable: bool = False


_SPECS = (
    _FileSpec("var/log/syslog", "syslog", _syslog_line, 0.12),
    _FileSpec("var/log/auth.log", "auth", _auth_line, 0.04),
    _FileSpec("var/log/kern.log", "syslog", _syslog_line, 0.05),
    _FileSpec("var/log/daemon.log", "syslog", _syslog_line, 0.05),
    _FileSpec("var/log/libvirt/libvirtd.log", "libvirtd", _libvirtd_line, 0.12),
    _FileSpec("var/log/libvirt/qemu/instance-{n:08x}.log", "qemu", _qemu_line, 0.14, True),
    _FileSpec("var/log/nova/nova-compute{n}.log", "nova", _nova_line, 0.28, True),
    _FileSpec("var/log/openvswitch/ovs-vswitchd.log", "ovs", _ovs_line, 0.06),
    _FileSpec(
        "var/log/containers/app-{n:02d}_default_web-1.log", "container", _container_line, 0.09, True
    ),
    _FileSpec(
        "var/lib/docker/containers/{n:064x}/{n:064x}-json.log", "docker", _docker_line, 0.05, True
    ),
)
_POOL = 3000


def _plan(total: int) -> list[tuple[_FileSpec, str, int]]:
    """(spec, relative path, bytes) of every log file for a tree of total bytes."""
    plan: list[tuple[_FileSpec, str, int]] = []
    overflow = 0
    for spec in _SPECS:
        want = int(total * spec.share)
        if not spec.splittable:
            size = min(want, FILE_CAP)
            overflow += want - size
            plan.append((spec, spec.path, size))
    splittable = [s for s in _SPECS if s.splittable]
    split_share = sum(s.share for s in splittable)
    for spec in splittable:
        want = int(total * spec.share + overflow * spec.share / split_share)
        part_cap = 12 * MB if spec.style == "qemu" else FILE_CAP
        parts = max(1, -(-want // part_cap))
        for n in range(parts):
            path = (
                spec.path.format(n=n + 1)
                if "{n}" not in spec.path
                else spec.path.format(n="" if n == 0 else f"-{n + 1}")
            )
            plan.append((spec, path, want // parts))
    return plan


def _config_files(
    values: _Values, seeds: list[Seed], users: list[str], hosts: list[str]
) -> dict[str, str]:
    """Config files under etc/: the node's identity and a few seeded secrets."""

    def seed(kind: str, path: str, line: int) -> str:
        value = values.make(kind)
        seeds.append(Seed(kind, value, path, line))
        return value

    passwd = [
        "root:x:0:0:root:/root:/bin/bash",
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
        "nova:x:64060:64060::/var/lib/nova:/bin/sh",
        "libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    passwd += [f"{u}:x:{1000 + i}:{1000 + i}::/home/{u}:/bin/bash" for i, u in enumerate(users)]
    hosts_lines = ["127.0.0.1 localhost", f"127.0.1.1 {NODE_HOSTNAME}", "::1 ip6-localhost"]
    hosts_lines += [f"10.0.9.{10 + i} {h}" for i, h in enumerate(hosts)]
    nova = [
        "[DEFAULT]",
        "my_ip = 10.0.1.5",
        f"transport_url = rabbit://nova:{seed('url_password', 'etc/nova/nova.conf', 2)}"
        "@ctl1.dc1.acme-corp.com:5672/",
        "[database]",
        f"connection = mysql+pymysql://nova:{seed('url_password', 'etc/nova/nova.conf', 4)}"
        "@10.0.1.2/nova",
        "[keystone_authtoken]",
        "auth_url = http://ctl1.dc1.acme-corp.com:5000/v3",
        f"password = {seed('config_password', 'etc/nova/nova.conf', 7)}",
        "[vnc]",
        "server_listen = 0.0.0.0",
    ]
    qemu = [
        f'vnc_password = "{seed("config_password", "etc/libvirt/qemu.conf", 0)}"',
        'user = "libvirt-qemu"',
        f"aws_secret_access_key: {seed('aws_secret_key', 'etc/libvirt/qemu.conf', 2)}",
        f'spice_password = "{seed("config_password", "etc/libvirt/qemu.conf", 3)}"',
    ]
    return {
        "etc/hostname": NODE_HOSTNAME + "\n",
        "etc/passwd": "\n".join(passwd) + "\n",
        "etc/hosts": "\n".join(hosts_lines) + "\n",
        "etc/nova/nova.conf": "\n".join(nova) + "\n",
        "etc/libvirt/qemu.conf": "\n".join(qemu) + "\n",
        "etc/libvirt/libvirtd.conf": 'listen_tls = 1\nauth_tcp = "sasl"\n',
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n',
    }


def make_log_tree(
    root: Path, total_mb: float, *, seed: int = 7, seeds_per_kind: int | None = None
) -> LogTree:
    """Writes a host tree of about total_mb MiB of logs under root; returns what it planted.

    seeds_per_kind: seeded values of every kind (default: 20 plus 2 per MiB, at most 200).
    """
    rng = random.Random(seed)
    values = _Values(rng)
    population = _population(rng)
    total = int(total_mb * MB)
    per_kind = seeds_per_kind if seeds_per_kind is not None else min(200, 20 + int(2 * total_mb))
    tree = LogTree(root=root)

    seeded_users = [values.make("username") for _ in range(per_kind)]
    seeded_short = [values.make("short_hostname") for _ in range(per_kind)]
    login_users = list(population.users) + seeded_users
    configs = _config_files(values, tree.seeds, login_users, seeded_short)
    for rel, text in configs.items():
        _write(root / rel, text.encode())
        tree.files.append(rel)

    plan = _plan(total)
    # Which file gets which seeded line: spread evenly over the files, by size.
    slots: list[tuple[str, str]] = []  # (kind, value)
    pre = {"username": iter(seeded_users), "short_hostname": iter(seeded_short)}
    for kind in SEED_KINDS:
        if kind == "private_key":
            continue
        for _ in range(per_kind):
            value = next(pre[kind]) if kind in pre else values.make(kind)
            slots.append((kind, value))
    rng.shuffle(slots)
    weights = [size for _, _, size in plan]
    assignment: dict[str, list[tuple[str, str]]] = {path: [] for _, path, _ in plan}
    for slot, (_, path, _) in zip(
        slots, rng.choices(plan, weights=weights, k=len(slots)), strict=True
    ):
        assignment[path].append(slot)

    for spec, path, size in plan:
        pool = [spec.maker(rng, population) for _ in range(_POOL)]
        average = sum(len(x) + 1 for x in pool) / len(pool)
        lines = rng.choices(pool, k=max(1, int(size / average)))
        positions = rng.sample(range(len(lines)), k=min(len(lines), len(assignment[path])))
        for position, (kind, value) in zip(positions, assignment[path], strict=False):
            lines[position] = _seed_line(kind, value, spec.style, rng)
            tree.seeds.append(Seed(kind, value, path, position))
        _write(root / path, ("\n".join(lines) + "\n").encode())
        tree.files.append(path)

    # PEM private keys, as they end up in logs: whole blocks dumped by a debug line.
    pem_path = "var/log/nova/nova-manage.log"
    blocks: list[str] = []
    for _ in range(per_kind):
        body = values.make("private_key")
        tree.seeds.append(Seed("private_key", body, pem_path, -1))
        blocks.append(
            f"{_iso_ts(rng)} {rng.randint(1000, 9999)} DEBUG nova.crypto [-] generated key:\n"
            f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n"
            + "\n".join("".join(rng.choices(_B64, k=64)) for _ in range(3))
            + "\n-----END RSA PRIVATE KEY-----\n"
            f"{_iso_ts(rng)} {rng.randint(1000, 9999)} INFO nova.crypto [-] key stored"
        )
    _write(root / pem_path, ("\n".join(blocks) + "\n").encode())
    tree.files.append(pem_path)

    tree.users = login_users
    domains = {"acme-corp.com"}
    for s in tree.seeds:
        if s.kind == "hostname":
            domains.add(s.value.split(".", 1)[1])
        elif s.kind == "email":
            domains.add(s.value.rpartition("@")[2])
        elif s.kind == "domain":
            domains.add(s.value)
    tree.domains = sorted(domains)
    for rel in tree.files:
        size = (root / rel).stat().st_size
        tree.total_bytes += size
        if rel.startswith("var/"):
            tree.log_bytes += size
    return tree


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def survivors(
    tree: LogTree, redacted_root: Path, paths: dict[str, str] | None = None
) -> list[Seed]:
    """Seeds whose value is still present in the redacted copy at redacted_root.

    paths maps a tree-relative path to its path in the copy (default: the same).
    A file missing from the copy raises FileNotFoundError (a tool that drops a
    file has not redacted it; the caller decides what that means).
    """
    by_file: dict[str, list[Seed]] = {}
    for s in tree.seeds:
        by_file.setdefault(s.path, []).append(s)
    found: list[Seed] = []
    for rel, seeds in by_file.items():
        target = redacted_root / (paths or {}).get(rel, rel)
        text = target.read_bytes().decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        original_lines = _line_count(tree.root / rel)
        for s in seeds:
            if s.line >= 0 and len(lines) == original_lines and s.line < len(lines):
                if s.value in lines[s.line]:
                    found.append(s)
            elif s.value in text:
                found.append(s)
    return found


def _line_count(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while block := fh.read(4 * MB):
            count += block.count(b"\n")
    return count + 1  # split("\n") of text ending in "\n" has one empty last item


def recall(tree: LogTree, left: Iterable[Seed]) -> dict[str, tuple[int, int]]:
    """kind -> (values removed, values seeded)."""
    total = tree.seed_counts()
    missed = Counter(s.kind for s in left)
    return {k: (total[k] - missed.get(k, 0), total[k]) for k in SEED_KINDS if k in total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    tree = make_log_tree(args.dest, args.mb, seed=args.seed)
    print(
        f"{args.dest}: {len(tree.files)} files, {tree.log_bytes / MB:.1f} MiB of logs, "
        f"{len(tree.seeds)} seeded values ({len(tree.seed_counts())} kinds)"
    )
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
