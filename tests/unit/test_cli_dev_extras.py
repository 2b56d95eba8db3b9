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


@pytest.mark.timeout(30)
def test_dev_up_node_range_is_the_clusters(tmp_path: object) -> None:
    from click.testing import CliRunner

    from novaops.cli import dev
    from novaops.devcluster import cluster

    assert dev.MAX_NODES == cluster.MAX_NODES
    result = CliRunner().invoke(
        dev.dev, ["up", "--nodes", str(cluster.MAX_NODES + 1), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert f"1<=x<={cluster.MAX_NODES}" in result.output


def test_start_deadlines_grow_with_the_cluster() -> None:
    from novaops.cli import dev
    from novaops.devcluster import cluster

    assert cluster.start_timeout(1) >= 30
    assert cluster.start_timeout(50) >= 2 * 35  # 50 executors took ~35 s to all listen
    assert dev.registration_timeout(50) > dev.registration_timeout(3) >= 30
