"""Config errors name the file, the key and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from novaops.client.config import ClientConfig, ConfigError
from novaops.controller.config import ControllerConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        ClientConfig.load(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        ClientConfig.load(write(tmp_path, "controllers = [\n"))


def test_bad_address(tmp_path: Path) -> None:
    path = write(tmp_path, 'controllers = ["localhost"]\n[tls]\ninsecure = true\n')
    with pytest.raises(ConfigError) as info:
        ClientConfig.load(path)
    assert (
        str(info.value)
        == f"{path}: key 'controllers': expected a list of host:port, got 'localhost'"
    )


def test_tls_required(tmp_path: Path) -> None:
    path = write(tmp_path, 'controllers = ["127.0.0.1:1"]\n')
    with pytest.raises(ConfigError, match="key 'tls': expected a \\[tls\\] table"):
        ClientConfig.load(path)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'controllers = ["127.0.0.1:1"]\n[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n',
    )
    with pytest.raises(ConfigError, match=r"key 'tls\.ca': expected a path to an existing file"):
        ClientConfig.load(path)


def test_controller_store_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[controller]\nname = "ctl-0"\nlisten = "127.0.0.1:7400"\n[tls]\ninsecure = true\n'
        '[store]\nkind = "sqlite"\n',
    )
    with pytest.raises(ConfigError) as info:
        ControllerConfig.load(path)
    assert "key 'store.kind': expected one of embedded|etcd, got 'sqlite'" in str(info.value)


def test_controller_config_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[controller]\nname = "ctl-0"\nlisten = "127.0.0.1:7400"\n[tls]\ninsecure = true\n'
        '[store]\nkind = "embedded"\n',
    )
    config = ControllerConfig.load(path)
    assert config.advertise == "127.0.0.1:7400"
    assert config.store.path == tmp_path.resolve() / "novaops.db"
    assert config.tls.insecure


def test_controller_automation_policy_keys(tmp_path: Path) -> None:
    base = (
        '[controller]\nname = "ctl-0"\nlisten = "127.0.0.1:7400"\n[tls]\ninsecure = true\n'
        '[store]\nkind = "embedded"\n[automation]\nrecovery_timeout_ms = 60000\n'
    )
    config = ControllerConfig.load(
        write(tmp_path, base + "errors_before_failing = 4\ncause_ids_kept = 5\n")
    )
    policy = config.automation.policy
    assert (policy.errors_before_failing, policy.cause_ids_kept) == (4, 5)
    assert policy.recovery_deadline == 300.0
    path = write(tmp_path, base + "recovery_deadline_ms = 90000\n")
    with pytest.raises(ConfigError) as info:
        ControllerConfig.load(path)
    assert str(info.value) == (
        f"{path}: key 'automation.recovery_deadline_ms': expected at least twice "
        "recovery_timeout_ms (120000), got 90000"
    )
