"""Architecture boundaries (STYLE.md #7), checked on the source, not hoped for."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path} imports {name}"
        for path, names in imported_modules(ROOT / folder).items()
        for name in names
        if any(name == banned or name.startswith(banned + ".") for banned in forbidden)
    )


def test_cli_imports_neither_controller_nor_executor() -> None:
    assert offenders("cli", ("novaops.controller", "novaops.executor")) == []


def test_client_library_imports_neither_controller_nor_executor() -> None:
    assert offenders("client", ("novaops.controller", "novaops.executor", "novaops.cli")) == []


def test_executor_does_not_import_controller() -> None:
    assert offenders("executor", ("novaops.controller", "novaops.cli")) == []


def test_controller_does_not_import_executor_or_cli() -> None:
    assert offenders("controller", ("novaops.executor", "novaops.cli")) == []


def test_help_does_not_import_grpc() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['novaops', '--help']\n"
        "from novaops.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "banned = ('grpc', 'novaops.controller', 'novaops.executor')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'grpc' or m.startswith(banned[1:])]\n"
        "print('BANNED:' + ','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "BANNED:"
