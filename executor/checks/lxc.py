"""libvirt-lxc containers, located the way libvirt exposes them on the host.

libvirt's LXC driver keeps, for every running container domain, a pid file
``/run/libvirt/lxc/<name>.pid`` naming its ``libvirt_lxc`` controller process,
and the live domain XML in ``/run/libvirt/lxc/<name>.xml``. The container's
init is the controller's child. Declared service ports come from the domain
metadata (``<novaops:ports xmlns:novaops="https://novaops.dev/xmlns/1">8080,9090</novaops:ports>``).
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

import psutil

from novaops.executor.checks.sources import ContainerLocation
from novaops.executor.hostroot import HostPathError, HostRoot

LXC_RUN_DIR = "/run/libvirt/lxc"
METADATA_NS = "https://novaops.dev/xmlns/1"


def parse_ports(domain_xml: str) -> tuple[int, ...]:
    """Ports declared in the domain metadata; () when none or unparsable."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return ()
    node = root.find(f"metadata/{{{METADATA_NS}}}ports")
    if node is None or not node.text:
        return ()
    ports = []
    for token in node.text.replace(" ", "").split(","):
        if token.isdigit() and 0 < int(token) < 65536:
            ports.append(int(token))
    return tuple(ports)


def init_pid_of(controller_pid: int) -> int | None:
    """The container's init: the first child of its libvirt_lxc controller."""
    try:
        children = psutil.Process(controller_pid).children()
    except psutil.Error:
        return None
    return min((c.pid for c in children), default=None)


def libvirt_lxc_containers(root: HostRoot) -> list[ContainerLocation]:
    """Every container domain with a pid file under the host root's /run/libvirt/lxc."""
    found = []
    try:
        names = sorted(n for n in root.list_dir(LXC_RUN_DIR) if n.endswith(".pid"))
    except (OSError, HostPathError):
        return []
    for pid_name in names:
        name = pid_name.removesuffix(".pid")
        try:
            text = root.read_text(f"{LXC_RUN_DIR}/{pid_name}").strip()
        except (OSError, HostPathError):
            continue
        controller = int(text) if text.isdigit() else None
        alive = controller is not None and psutil.pid_exists(controller)
        ports: tuple[int, ...] = ()
        with contextlib.suppress(OSError, HostPathError):
            ports = parse_ports(root.read_text(f"{LXC_RUN_DIR}/{name}.xml"))
        found.append(
            ContainerLocation(
                name=name,
                runtime="libvirt-lxc",
                init_pid=init_pid_of(controller) if alive and controller else None,
                ports=ports,
                running=alive,
            )
        )
    return found
