"""The recovery catalogue (see :mod:`novaops.executor.recovery.catalogue`)."""

from novaops.executor.recovery.catalogue import (
    CATALOGUE,
    ActionOutcome,
    Clock,
    DomainControl,
    Outcome,
    RecoveryCatalogue,
    RecoveryError,
    Step,
    SystemClock,
    TargetNotAccepted,
    TargetRequired,
    UnknownAction,
    action_outcome,
    recovery_counter,
)
from novaops.executor.recovery.libvirt_ops import ConnectionDomainControl
from novaops.executor.recovery.netlink import (
    LinkControl,
    LinkState,
    NetlinkLinks,
    NetlinkUnavailable,
)

__all__ = [
    "CATALOGUE",
    "ActionOutcome",
    "Clock",
    "ConnectionDomainControl",
    "DomainControl",
    "LinkControl",
    "LinkState",
    "NetlinkLinks",
    "NetlinkUnavailable",
    "Outcome",
    "RecoveryCatalogue",
    "RecoveryError",
    "Step",
    "SystemClock",
    "TargetNotAccepted",
    "TargetRequired",
    "UnknownAction",
    "action_outcome",
    "recovery_counter",
]
