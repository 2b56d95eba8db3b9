"""Controller persistence behind one interface: memory (tests), embedded (sqlite), etcd (HA)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from novaops.controller.clock import Clock
from novaops.controller.store.base import (
    FencingError,
    HistoryEntry,
    LeaderRecord,
    LeaderTerm,
    NodeRecord,
    NodeRegistration,
    Store,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from novaops.controller.store.embedded import EmbeddedStore
from novaops.controller.store.memory import MemoryStore

if TYPE_CHECKING:
    from novaops.controller.store.etcd import EtcdStore

__all__ = [
    "EmbeddedStore",
    "EtcdStore",
    "FencingError",
    "HistoryEntry",
    "LeaderRecord",
    "LeaderTerm",
    "MemoryStore",
    "NodeRecord",
    "NodeRegistration",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "open_store",
]


def __getattr__(name: str) -> object:
    # etcd3gw pulls in requests and futurist; only etcd users pay for that import.
    if name == "EtcdStore":
        from novaops.controller.store.etcd import EtcdStore

        return EtcdStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    kind: str,
    *,
    path: Path | None = None,
    endpoints: list[str] | None = None,
    prefix: str = "/novaops",
    clock: Clock | None = None,
    timeout: float = 5.0,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> Store:
    """A store of ``kind`` ("memory" | "embedded" | "etcd"), not yet opened."""
    if kind == "memory":
        from novaops.controller.clock import SystemClock

        return MemoryStore(clock if clock is not None else SystemClock())
    if kind == "embedded":
        if path is None:
            raise ValueError("the embedded store needs a path")
        return EmbeddedStore(path, clock)
    if kind == "etcd":
        if not endpoints:
            raise ValueError("the etcd store needs at least one endpoint")
        from novaops.controller.store.etcd import EtcdStore

        return EtcdStore(
            endpoints, prefix=prefix, clock=clock, timeout=timeout, ca=ca, cert=cert, key=key
        )
    raise ValueError(f"unknown store kind {kind!r}; expected memory, embedded or etcd")
