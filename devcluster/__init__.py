"""A local simulated cluster for ``novaops dev up|status|down``.

The CLI calls these functions and renders their results; nothing here prints.
"""

from novaops.devcluster.cluster import (
    ClusterState,
    StoreKind,
    down,
    kill_process,
    simulated_status,
    status,
    up,
    wait_foreground,
)
from novaops.devcluster.errors import (
    ClusterRunningError,
    DevClusterError,
    NoClusterError,
    ProcessStartError,
    StateFileError,
    UnknownProcessError,
)
from novaops.devcluster.processes import ProcessStatus, StopOutcome
from novaops.devcluster.state import ProcessRole

__all__ = [
    "ClusterRunningError",
    "ClusterState",
    "DevClusterError",
    "NoClusterError",
    "ProcessRole",
    "ProcessStartError",
    "ProcessStatus",
    "StateFileError",
    "StopOutcome",
    "StoreKind",
    "UnknownProcessError",
    "down",
    "kill_process",
    "simulated_status",
    "status",
    "up",
    "wait_foreground",
]
