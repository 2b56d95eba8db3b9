"""``novaops dev`` on a base install (no executor extras): one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

# psutil made unimportable, as on a base install that has only the client and CLI.
SCRIPT = """
import sys
sys.modules["psutil"] = None
sys.argv = ["novaops", "dev", "status", "--state-dir", sys.argv[1]]
from novaops.cli.main import main
main()
"""


@pytest.mark.timeout(60)
def test_dev_without_the_extras_says_what_to_install(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "missing: psutil" in result.stderr
    assert "pip install 'novaops[all]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
