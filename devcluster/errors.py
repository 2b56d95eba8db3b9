"""Errors of the dev cluster; each message is one line the CLI prints as is."""

from __future__ import annotations


class DevClusterError(Exception):
    """Something about the local dev cluster went wrong; the message says what."""


class ClusterRunningError(DevClusterError):
    """``up`` found a cluster recorded in the state folder that is still running."""


class NoClusterError(DevClusterError):
    """The state folder holds no cluster record."""


class StateFileError(DevClusterError):
    """cluster.json is unreadable or not in the expected format."""


class ProcessStartError(DevClusterError):
    """A cluster process exited or never opened its port while starting."""


class UnknownProcessError(DevClusterError):
    """No process of that name is recorded for the cluster."""
