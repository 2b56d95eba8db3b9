"""The controller's configuration file (format: docs/configuration.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from novaops.client.config import ConfigError, ConfigSection, TLSFiles, load_toml
from novaops.controller.automation import AutomationConfig
from novaops.controller.policy import PolicyConfig
from novaops.pki.identity import valid_name


@dataclass(frozen=True)
class StoreConfig:
    kind: str  # "embedded" | "etcd"
    path: Path | None = None
    endpoints: tuple[str, ...] = ()
    prefix: str = "/novaops"
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None

    @property
    def description(self) -> str:
        return str(self.path) if self.kind == "embedded" else ",".join(self.endpoints)


@dataclass(frozen=True)
class ControllerConfig:
    path: Path
    name: str
    listen: str
    advertise: str
    tls: TLSFiles
    store: StoreConfig
    heartbeat_interval_ms: int = 1000
    missed_heartbeats_limit: int = 3
    max_heartbeats_per_second: float = 50.0
    lease_ttl_seconds: int = 5
    per_node_ms: int = 5000
    overall_ms: int = 30000
    metrics_listen: str | None = None
    log_file: Path | None = None
    automation: AutomationConfig = field(default_factory=AutomationConfig)

    @staticmethod
    def load(path: Path) -> ControllerConfig:
        doc = load_toml(path)
        ctl = doc.section("controller", required=True)
        name = ctl.str("name")
        if not valid_name(name):
            raise ctl.error("name", "a lowercase name like ctl-0 (a-z, 0-9, '-', '.')", name)
        listen = ctl.address("listen")
        election = doc.section("election")
        fanout = doc.section("fanout")
        return ControllerConfig(
            path=doc.source,
            name=name,
            listen=listen,
            advertise=ctl.address("advertise", listen),
            tls=TLSFiles.from_section(doc),
            store=_store_config(doc.section("store", required=True)),
            heartbeat_interval_ms=ctl.int("heartbeat_interval_ms", 1000, minimum=50),
            missed_heartbeats_limit=ctl.int("missed_heartbeats_limit", 3, minimum=1),
            max_heartbeats_per_second=ctl.float("max_heartbeats_per_second", 50.0),
            lease_ttl_seconds=election.int("lease_ttl_seconds", 5, minimum=2),
            per_node_ms=fanout.int("per_node_ms", 5000, minimum=10),
            overall_ms=fanout.int("overall_ms", 30000, minimum=10),
            metrics_listen=(ctl.address("metrics_listen") if ctl.has("metrics_listen") else None),
            log_file=ctl.path("log_file") if ctl.has("log_file") else None,
            automation=_automation_config(doc.section("automation")),
        )


def _automation_config(section: ConfigSection) -> AutomationConfig:
    share = section.float("max_quarantined_share", 0.10)
    if not 0 < share <= 1:
        raise section.error("max_quarantined_share", "a fraction in (0, 1]", share)
    recovery_timeout = section.int("recovery_timeout_ms", 60_000, minimum=100) / 1000
    # The policy gives up on a recovery that never reported back after this long; it
    # must outlast the recovery's own timeout, or a slow success would count as lost.
    deadline_ms = section.int("recovery_deadline_ms", max(300_000, int(recovery_timeout * 2000)))
    if deadline_ms < recovery_timeout * 2000:
        raise section.error(
            "recovery_deadline_ms",
            f"at least twice recovery_timeout_ms ({int(recovery_timeout * 2000)})",
            deadline_ms,
        )
    recovery_deadline = deadline_ms / 1000
    return AutomationConfig(
        enabled=section.bool("enabled", True),
        poll_interval=section.int("poll_interval_ms", 10_000, minimum=100) / 1000,
        per_node_timeout=section.int("per_node_timeout_ms", 10_000, minimum=100) / 1000,
        recovery_timeout=recovery_timeout,
        policy=PolicyConfig(
            failures_before_recovery=section.int("failures_before_recovery", 2, minimum=1),
            max_failed_recoveries=section.int("max_failed_recoveries", 3, minimum=0),
            clean_passes_to_release=section.int("clean_passes_to_release", 3, minimum=1),
            max_quarantined_share=share,
            window_seconds=section.float("breaker_window_seconds", 3600.0, minimum=1.0),
            window_limit=section.int("breaker_window_limit", 3, minimum=1),
            errors_before_failing=section.int("errors_before_failing", 2, minimum=1),
            recovery_deadline=recovery_deadline,
            cause_ids_kept=section.int("cause_ids_kept", 20, minimum=1),
        ),
    )


def _store_config(section: ConfigSection) -> StoreConfig:
    kind = section.choice("kind", ("embedded", "etcd"))
    if kind == "embedded":
        return StoreConfig(kind=kind, path=section.path("path", "novaops.db"))
    endpoints = section.str_list("endpoints")
    if not endpoints:
        raise section.error("endpoints", "at least one etcd client URL like http://127.0.0.1:2379")
    for url in endpoints:
        if not url.startswith(("http://", "https://")):
            raise section.error(
                "endpoints", "etcd client URLs starting with http:// or https://", url
            )
    prefix = section.str("prefix", "/novaops")
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise section.error(
            "prefix", "a key prefix like /novaops (leading '/', no trailing '/')", prefix
        )

    def opt(key: str) -> Path | None:
        return section.path(key, must_exist=True) if section.has(key) else None

    return StoreConfig(
        kind=kind,
        endpoints=tuple(endpoints),
        prefix=prefix,
        etcd_ca=opt("etcd_ca"),
        etcd_cert=opt("etcd_cert"),
        etcd_key=opt("etcd_key"),
    )


__all__ = ["ConfigError", "ControllerConfig", "StoreConfig"]
