"""The collectors of a node bundle, one function per concern, in archive order.

Each collector yields :class:`Member` objects built through the context (so
every byte is redacted) and may call ``ctx.skip(reason)`` when it does not
apply on this host. Facts are read through the HostRoot; live state (libvirt,
diagnostics, netlink) comes from the injected sources.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Iterator
from typing import Any

from novaops.client.bundle.format import (
    DIAG_CHECKS_NAME,
    GROUP_DIAG,
    GROUP_EXPERIMENTAL,
    GROUP_LIBVIRT,
    GROUP_LOGS,
    GROUP_METRICS,
    GROUP_NETWORK,
    GROUP_SYSTEM,
)
from novaops.executor.bundle import logs
from novaops.executor.bundle.builder import CollectorContext, CollectorSpec, Member

# Configuration files worth a look when libvirt or QEMU misbehave. They hold
# passwords (VNC/SPICE, RBD, database URLs): the redactor sees every line.
CONFIG_FILES = (
    "/etc/libvirt/libvirtd.conf",
    "/etc/libvirt/qemu.conf",
    "/etc/libvirt/virtqemud.conf",
    "/etc/nova/nova.conf",
    "/etc/nova/nova-compute.conf",
    "/etc/hosts",
    "/etc/os-release",
)
_VIRT_FLAGS = ("vmx", "svm", "ept", "npt", "vpid", "avic", "x2apic", "hypervisor")
_PACKAGE_PREFIXES = ("libvirt", "qemu", "ovmf", "seabios", "linux-image")


# ------------------------------------------------------------------------------ logs


def collect_libvirt_logs(ctx: CollectorContext) -> Iterator[Member]:
    yield from logs.host_log_members(ctx, logs.LIBVIRT_LOGS)


def collect_qemu_logs(ctx: CollectorContext) -> Iterator[Member]:
    yield from logs.host_log_members(ctx, logs.QEMU_LOGS)


def collect_executor_log(ctx: CollectorContext) -> Iterator[Member]:
    yield from logs.executor_log_members(ctx, ctx.sources.executor_log)


def collect_container_logs(ctx: CollectorContext) -> Iterator[Member]:
    yield from logs.host_log_members(ctx, logs.CONTAINER_LOGS)


def collect_service_logs(ctx: CollectorContext) -> Iterator[Member]:
    yield from logs.host_log_members(ctx, logs.SERVICE_LOGS)


def collect_system_log(ctx: CollectorContext) -> Iterator[Member]:
    if logs.journal_available(ctx.root):
        yield from logs.journal_members(ctx)
    yield from logs.host_log_members(ctx, logs.SYSTEM_LOGS)


def collect_rotated_logs(ctx: CollectorContext) -> Iterator[Member]:
    yield from logs.host_log_members(ctx, logs.ROTATED_LOGS)


# ---------------------------------------------------------------------------- system


def _read(ctx: CollectorContext, host_path: str) -> str | None:
    try:
        return ctx.root.read_text(host_path)
    except OSError:
        return None


def cgroup_backend(ctx: CollectorContext) -> str:
    """``v2``, ``hybrid``, ``v1`` or ``unknown`` from the host's /sys/fs/cgroup."""
    if ctx.root.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    if ctx.root.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        return "hybrid"
    if ctx.root.is_dir("/sys/fs/cgroup/cpu") or ctx.root.is_dir("/sys/fs/cgroup/memory"):
        return "v1"
    return "unknown"


def cpu_virt_flags(cpuinfo: str) -> list[str]:
    """Virtualization-related CPU flags present in /proc/cpuinfo content."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [flag for flag in _VIRT_FLAGS if flag in present]
    return []


def dpkg_versions(status: str) -> dict[str, str]:
    """Installed versions of libvirt/QEMU-related packages from dpkg's status file."""
    found: dict[str, str] = {}
    for stanza in status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        name = fields.get("Package", "")
        if name.startswith(_PACKAGE_PREFIXES) and "installed" in fields.get("Status", ""):
            found[name] = fields.get("Version", "")
    return dict(sorted(found.items()))


def collect_system_facts(ctx: CollectorContext) -> Iterator[Member]:
    cpuinfo = _read(ctx, "/proc/cpuinfo") or ""
    facts: dict[str, Any] = {
        "kernel_release": (_read(ctx, "/proc/sys/kernel/osrelease") or "").strip() or None,
        "kernel_version": (_read(ctx, "/proc/version") or "").strip() or None,
        "machine": platform.machine(),
        "cpu_virt_flags": cpu_virt_flags(cpuinfo),
        "dev_kvm": {
            "present": ctx.root.exists("/dev/kvm"),
            "read_write": ctx.root.can_open_read_write("/dev/kvm"),
        },
        "cgroup_backend": cgroup_backend(ctx),
        "host_root": str(ctx.root.path),
    }
    status = _read(ctx, "/var/lib/dpkg/status")
    facts["packages"] = dpkg_versions(status) if status is not None else None
    yield ctx.json_member("system/facts.json", facts)


def collect_libvirt_version(ctx: CollectorContext) -> Iterator[Member]:
    version, capabilities = ctx.source("libvirt_info")
    yield ctx.json_member("system/libvirt-version.json", {"libvirt_version": version})
    yield ctx.text_member("system/libvirt-capabilities.xml", capabilities)


def collect_config_files(ctx: CollectorContext) -> Iterator[Member]:
    for host_path in CONFIG_FILES:
        if not ctx.root.exists(host_path):
            continue
        with logs.open_host_file(ctx.root, host_path) as fh:
            yield ctx.redacted_member(
                "system/config" + host_path,
                fh,
                source=host_path,
                mtime=os.fstat(fh.fileno()).st_mtime,
            )


# --------------------------------------------------------------------------- libvirt


def collect_domains(ctx: CollectorContext) -> Iterator[Member]:
    states: list[dict[str, str]] = []
    for name, state, xml in ctx.source("domains"):
        states.append({"name": name, "state": state})
        yield ctx.text_member(f"libvirt/domains/{name}.xml", xml)
    yield ctx.json_member("libvirt/domains.json", states)


def collect_diag(ctx: CollectorContext) -> Iterator[Member]:
    yield ctx.json_member(DIAG_CHECKS_NAME, ctx.source("diag_checks"))


# ---------------------------------------------------------------------------- network


def _sysfs_network(ctx: CollectorContext) -> dict[str, Any]:
    if not ctx.root.is_dir("/sys/class/net"):
        ctx.skip("no netlink on a simulated host root and no sys/class/net under it")
    links: list[dict[str, Any]] = []
    for name in ctx.root.list_dir("/sys/class/net"):
        base = f"/sys/class/net/{name}"
        link: dict[str, Any] = {"name": name}
        for attribute in ("address", "operstate", "mtu", "carrier"):
            value = _read(ctx, f"{base}/{attribute}")
            link[attribute] = value.strip() if value is not None else None
        master = ctx.root.resolve(f"{base}/master") if ctx.root.exists(f"{base}/master") else None
        link["master"] = master.name if master is not None else None
        link["is_bridge"] = ctx.root.is_dir(f"{base}/bridge")
        if link["is_bridge"]:
            stp = _read(ctx, f"{base}/bridge/stp_state")
            link["stp_state"] = stp.strip() if stp is not None else None
        stats: dict[str, int] = {}
        if ctx.root.is_dir(f"{base}/statistics"):
            for counter in ctx.root.list_dir(f"{base}/statistics"):
                value = _read(ctx, f"{base}/statistics/{counter}")
                if value is not None and value.strip().isdigit():
                    stats[counter] = int(value)
        link["statistics"] = stats
        links.append(link)
    bridges = {
        link["name"]: sorted(m["name"] for m in links if m["master"] == link["name"])
        for link in links
        if link["is_bridge"]
    }
    return {"source": "sysfs", "links": links, "bridges": bridges}


_FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}


def netlink_state(netns: str | None = None) -> dict[str, Any]:
    """Links (with counters), addresses, routes and bridges of a network namespace.

    netns: a named namespace, which only the calling thread enters (setns, no
    fork: see :mod:`novaops.executor.netns`); None: the thread's own. Blocking:
    call it on a worker thread, never on the event loop's.
    """
    from novaops.executor.netns import iproute

    with iproute(netns) as ipr:
        raw_links = list(ipr.get_links())
        raw_addresses = list(ipr.get_addr())
        raw_routes = list(ipr.get_routes())
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in raw_links}
    links: list[dict[str, Any]] = []
    for link in raw_links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
        entry: dict[str, Any] = {
            "name": link.get_attr("IFLA_IFNAME"),
            "index": link["index"],
            "kind": kind,
            "address": link.get_attr("IFLA_ADDRESS"),
            "operstate": link.get_attr("IFLA_OPERSTATE"),
            "mtu": link.get_attr("IFLA_MTU"),
            "master": names.get(link.get_attr("IFLA_MASTER")),
            "statistics": dict(stats) if stats else {},
        }
        if kind == "bridge" and data is not None:
            entry["stp_state"] = data.get_attr("IFLA_BR_STP_STATE")
        links.append(entry)
    addresses = [
        {
            "link": names.get(a["index"]),
            "family": _FAMILIES.get(a["family"], a["family"]),
            "address": a.get_attr("IFA_ADDRESS"),
            "prefixlen": a["prefixlen"],
        }
        for a in raw_addresses
    ]
    routes = [
        {
            "family": _FAMILIES.get(r["family"], r["family"]),
            "dst": r.get_attr("RTA_DST") or "default",
            "dst_len": r["dst_len"],
            "gateway": r.get_attr("RTA_GATEWAY"),
            "oif": names.get(r.get_attr("RTA_OIF")),
            "table": r.get_attr("RTA_TABLE"),
        }
        for r in raw_routes
    ]
    bridges = {
        link["name"]: sorted(m["name"] for m in links if m["master"] == link["name"])
        for link in links
        if link["kind"] == "bridge"
    }
    return {
        "source": "netlink",
        "netns": netns,
        "links": links,
        "addresses": addresses,
        "routes": routes,
        "bridges": bridges,
    }


def collect_network_state(ctx: CollectorContext) -> Iterator[Member]:
    # The executor gives a netlink source bound to its node's namespace (see
    # BundleService); without one, the real host's own netlink, or the
    # simulated host root's sys/class/net.
    if ctx.sources.netlink is not None:
        state = ctx.source("netlink")
    elif ctx.root.is_system_root:
        state = netlink_state()
    else:
        state = _sysfs_network(ctx)
    yield ctx.json_member("network/state.json", state)


def collect_network_diag(ctx: CollectorContext) -> Iterator[Member]:
    yield ctx.json_member("network/diag-network.json", ctx.source("diag_network"))


# ---------------------------------------------------------------------------- metrics


def collect_prometheus(ctx: CollectorContext) -> Iterator[Member]:
    if ctx.sources.registry is None:
        ctx.skip("no metrics registry given")
    from prometheus_client import generate_latest

    yield ctx.text_member("metrics/executor.prom", generate_latest(ctx.sources.registry))


def _meminfo(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable", "MemFree", "SwapTotal", "SwapFree") and parts:
            values[key] = int(parts[0]) * 1024
    return values


def collect_host_gauges(ctx: CollectorContext) -> Iterator[Member]:
    gauges: dict[str, Any] = {}
    load = _read(ctx, "/proc/loadavg")
    if load is not None:
        gauges["load"] = [float(x) for x in load.split()[:3]]
    meminfo = _read(ctx, "/proc/meminfo")
    gauges["memory_bytes"] = _meminfo(meminfo) if meminfo is not None else None
    disks: dict[str, Any] = {}
    for host_path in (*ctx.sources.image_dirs, "/var/log"):
        try:
            st = os.statvfs(ctx.root.resolve(host_path))
        except OSError as exc:
            disks[host_path] = {"error": exc.strerror or str(exc)}
            continue
        disks[host_path] = {
            "total_bytes": st.f_blocks * st.f_frsize,
            "free_bytes": st.f_bavail * st.f_frsize,
        }
    gauges["disk"] = disks
    yield ctx.json_member("metrics/host.json", gauges)


def default_collectors() -> list[CollectorSpec]:
    """Every collector in archive order; groups decide which ones run."""
    return [
        CollectorSpec("system.facts", GROUP_SYSTEM, collect_system_facts),
        CollectorSpec("system.libvirt", GROUP_SYSTEM, collect_libvirt_version),
        CollectorSpec("system.config", GROUP_SYSTEM, collect_config_files),
        CollectorSpec("logs.libvirt", GROUP_LOGS, collect_libvirt_logs),
        CollectorSpec("logs.qemu", GROUP_LOGS, collect_qemu_logs),
        CollectorSpec("logs.executor", GROUP_LOGS, collect_executor_log),
        CollectorSpec("logs.containers", GROUP_LOGS, collect_container_logs),
        CollectorSpec("logs.services", GROUP_LOGS, collect_service_logs),
        CollectorSpec("logs.system", GROUP_LOGS, collect_system_log),
        CollectorSpec("logs.rotated", GROUP_EXPERIMENTAL, collect_rotated_logs),
        CollectorSpec("libvirt.domains", GROUP_LIBVIRT, collect_domains),
        CollectorSpec("diag.checks", GROUP_DIAG, collect_diag),
        CollectorSpec("network.state", GROUP_NETWORK, collect_network_state),
        CollectorSpec("network.diag", GROUP_NETWORK, collect_network_diag),
        CollectorSpec("metrics.executor", GROUP_METRICS, collect_prometheus),
        CollectorSpec("metrics.host", GROUP_METRICS, collect_host_gauges),
    ]
