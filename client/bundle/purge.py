"""purge: retention for stored bundles.

Only files that are bundles are touched: a name ending in a bundle extension,
not hidden, older than the cutoff (mtime), and whose first member is
``manifest.json``. Its ``.map.json`` goes with it.
"""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from novaops.client.bundle.archive import SUFFIXES, Limits, open_decompressed
from novaops.client.bundle.errors import BundleError
from novaops.client.bundle.format import MANIFEST_NAME


def is_bundle_file(path: Path) -> bool:
    """True when path is a compressed tar whose first member is manifest.json."""
    try:
        raw, stream = open_decompressed(path, Limits())
    except (BundleError, OSError):
        return False
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            first = tar.next()
            return first is not None and first.name == MANIFEST_NAME
    except (tarfile.TarError, OSError, EOFError, BundleError):
        return False
    finally:
        stream.close()
        raw.close()


def purge(
    folder: Path, older_than: timedelta, *, dry_run: bool = False, now: datetime | None = None
) -> list[Path]:
    """Bundles (and their map files) in folder older than older_than, removed unless dry_run.

    Returns what was (or would be) removed, sorted. Not recursive.
    """
    if older_than < timedelta(0):
        raise BundleError("older-than must not be negative")
    cutoff = (now or datetime.now(UTC)).timestamp() - older_than.total_seconds()
    removed: list[Path] = []
    for path in sorted(Path(folder).iterdir()):
        name = path.name.lower()
        if name.startswith(".") or not any(name.endswith(s) for s in SUFFIXES):
            continue
        if not path.is_file() or path.is_symlink() or path.stat().st_mtime >= cutoff:
            continue
        if not is_bundle_file(path):
            continue
        victims = [path]
        keep_map = path.with_name(path.name + ".map.json")
        if keep_map.is_file():
            victims.append(keep_map)
        for victim in victims:
            if not dry_run:
                victim.unlink(missing_ok=True)
            removed.append(victim)
    return removed
