"""Errors of the client library, each with the CLI exit code it maps to.

Exit codes (documented in the README):
0 ok; 1 a check failed; 2 usage or bad input; 3 some nodes unreachable;
4 cannot reach or authenticate to the controller; 5 the controller refused the
request (permission, not the leader, or a feature not built yet).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_NODES_UNREACHABLE = 3
EXIT_CONTROLLER_UNREACHABLE = 4
EXIT_REFUSED = 5


class NovaopsError(Exception):
    """Base of every error the client library raises; ``exit_code`` is for CLIs."""

    exit_code = EXIT_USAGE


class ConfigurationError(NovaopsError):
    """The client configuration is missing or invalid."""

    exit_code = EXIT_USAGE


class ControllerUnreachable(NovaopsError):
    """No configured controller answered."""

    exit_code = EXIT_CONTROLLER_UNREACHABLE


class AuthenticationFailed(NovaopsError):
    """The TLS handshake failed or the controller did not accept our certificate."""

    exit_code = EXIT_CONTROLLER_UNREACHABLE


class RequestRefused(NovaopsError):
    """The controller answered but refused: permission, precondition, or not built yet."""

    exit_code = EXIT_REFUSED


class InvalidRequest(NovaopsError):
    """The controller rejected the request's arguments."""

    exit_code = EXIT_USAGE
