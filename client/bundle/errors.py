"""Errors of the bundle tools; each message is one line, each maps to an exit code."""

from __future__ import annotations

from novaops.client.errors import EXIT_CHECK_FAILED, EXIT_USAGE, NovaopsError


class BundleError(NovaopsError):
    """Base of the support bundle errors."""

    exit_code = EXIT_USAGE


class UnsupportedOutput(BundleError):
    """The output name's extension names no supported compression."""


class BundleBusy(BundleError):
    """Another process is writing a bundle to the same output path."""


class BundleFormatError(BundleError):
    """The file is not a readable novaops support bundle."""

    exit_code = EXIT_CHECK_FAILED


class ChecksumMismatch(BundleError):
    """A node archive does not match the checksum recorded for it."""

    exit_code = EXIT_CHECK_FAILED


class UnsafeArchive(BundleError):
    """extract refused the archive: a member would escape or is not a plain file."""

    exit_code = EXIT_CHECK_FAILED


class DestinationExists(BundleError):
    """extract's destination exists and is not an empty folder."""
