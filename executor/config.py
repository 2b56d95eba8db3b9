"""The executor's configuration file (docs/configuration.md, "Executor").

``ExecutorConfig.load(path)`` either returns a complete, checked configuration
or raises one-line :class:`~novaops.client.config.ConfigError` naming the file,
the key and what was expected. Relative paths are resolved against the
configuration file's folder. Loading creates nothing on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from novaops.client.config import ConfigSection, TLSFiles, load_toml
from novaops.pki.identity import valid_name

DEFAULT_HOST_ROOT = "/"
DEFAULT_LIBVIRT_URI = "qemu:///system"
DEFAULT_STATE_DIR = "/var/lib/novaops-executor"
_WILDCARD_HOSTS = ("0.0.0.0", "[::]", "::", "")


@dataclass(frozen=True)
class ExecutorConfig:
    """A checked executor configuration."""

    path: Path
    node: str
    listen: str
    advertise: str
    controllers: tuple[str, ...]
    host_root: Path
    libvirt_uri: str
    state_dir: Path
    tls: TLSFiles
    log_file: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # Named network namespace holding this node's bridges and taps (None: our own).
    netns: str | None = None
    # Name prefixes of this node's tap devices (simulated nodes share one kernel).
    tap_prefixes: tuple[str, ...] = ("vnet", "tap", "macvtap")
    # Bridge members that are not domain taps and are expected (uplinks, bonds).
    bridge_uplinks: tuple[str, ...] = ()
    hooks_dir: Path | None = None
    metrics_listen: str | None = None
    # Background health checks (what heartbeats report) start at most this often.
    health_check_interval_ms: int = 5000

    @staticmethod
    def load(path: Path) -> ExecutorConfig:
        doc = load_toml(path)
        section = doc.section("executor", required=True)
        return ExecutorConfig(
            path=doc.source,
            node=_node_name(section),
            listen=section.address("listen"),
            advertise=_advertise(section),
            controllers=tuple(section.addresses("controllers")),
            host_root=_host_root(section),
            libvirt_uri=_libvirt_uri(section),
            state_dir=section.path("state_dir", DEFAULT_STATE_DIR),
            tls=TLSFiles.from_section(doc),
            log_file=section.path("log_file") if section.has("log_file") else None,
            labels=section.str_map("labels"),
            netns=section.optional_str("netns"),
            tap_prefixes=tuple(section.str_list("tap_prefixes", ["vnet", "tap", "macvtap"])),
            bridge_uplinks=tuple(section.str_list("bridge_uplinks", [])),
            hooks_dir=section.path("hooks_dir") if section.has("hooks_dir") else None,
            metrics_listen=(
                section.address("metrics_listen") if section.has("metrics_listen") else None
            ),
            health_check_interval_ms=section.int("health_check_interval_ms", 5000, minimum=500),
        )


def _node_name(section: ConfigSection) -> str:
    node = section.str("node")
    if not valid_name(node):
        raise section.error(
            "node", "a node name of lowercase letters, digits, '.', '_' or '-' (1-63)", node
        )
    return node


def _advertise(section: ConfigSection) -> str:
    if section.has("advertise"):
        return section.address("advertise")
    listen = section.address("listen")
    host = listen.rpartition(":")[0]
    if host in _WILDCARD_HOSTS:
        # Controllers cannot dial a wildcard address; make the operator say which.
        raise section.error(
            "advertise", f"an address controllers can reach (required when listen is {listen})"
        )
    return listen


def _host_root(section: ConfigSection) -> Path:
    root = section.path("host_root", DEFAULT_HOST_ROOT)
    if not root.is_dir():
        raise section.error("host_root", "an existing folder", str(root))
    return root


def _libvirt_uri(section: ConfigSection) -> str:
    uri = section.str("libvirt_uri", DEFAULT_LIBVIRT_URI)
    if "://" not in uri:
        raise section.error(
            "libvirt_uri", "a libvirt URI such as qemu:///system or test:///path/node.xml", uri
        )
    return uri
