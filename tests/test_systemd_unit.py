"""The systemd unit, checked by systemd's own tools without running systemd.

`systemd-analyze verify` refuses a unit whose ExecStart= binary does not exist, and the real unit
points at /opt/telemetryd. So the unit under test is the one `make install-unit` produces with
PREFIX set to the venv running these tests (its bin/telemetryd exists: pip writes the console
script) and DESTDIR set to a temporary directory: the same file an administrator would get, through
the same rewrite rule. mk/systemd.mk installs systemd-analyze (Debian package `systemd`) for
`make test`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "telemetryd.service"
EXAMPLE_CONFIG = REPO / "systemd" / "telemetryd.toml"
VENV = Path(sys.prefix)
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: `make test` installs it (mk/systemd.mk, Debian package systemd)"
    return path


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=60
    )


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    """A DESTDIR populated by `make install-unit install-config` with PREFIX = this venv."""
    destdir = tmp_path / "root"
    make("install-unit", "install-config", f"DESTDIR={destdir}", f"PREFIX={VENV}")
    return destdir


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def verify(unit: Path) -> tuple[int, list[str]]:
    """Exit status and the diagnostics that concern this unit (verify exits 0 on mere warnings)."""
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if unit.name in line or str(unit.parent) in line]


def exposure(unit: Path, threshold: int | None = None) -> tuple[int, float]:
    """Exit status and the overall exposure of `systemd-analyze security --offline=true`."""
    args = [systemd_analyze(), "security", "--offline=true", "--no-pager"]
    if threshold is not None:
        # On systemd 252 the threshold is in tenths of the printed score: 20 means 2.0.
        args.append(f"--threshold={threshold}")
    result = subprocess.run([*args, str(unit)], capture_output=True, text=True, timeout=60, cwd=unit.parent)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return result.returncode, float(match.group(1))


def test_installed_unit_points_at_the_prefix(staged: Path) -> None:
    unit = staged / "etc/systemd/system/telemetryd.service"
    exec_start = unit_settings(unit.read_text())["ExecStart"]
    assert exec_start == [f"{VENV}/bin/telemetryd run --config /etc/telemetryd/telemetryd.toml"]
    assert (VENV / "bin" / "telemetryd").is_file()
    assert "/opt/telemetryd" not in unit.read_text()


def test_systemd_analyze_verify_passes(staged: Path) -> None:
    status, diagnostics = verify(staged / "etc/systemd/system/telemetryd.service")
    assert status == 0
    assert diagnostics == []


def test_verify_check_catches_a_bad_unit(staged: Path, tmp_path: Path) -> None:
    # The check above must be able to fail: a misspelt sandbox option is only a warning to systemd.
    good = (staged / "etc/systemd/system/telemetryd.service").read_text()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "telemetryd.service"
    bad.write_text(good.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    _status, diagnostics = verify(bad)
    assert any("ProtectSystm" in line for line in diagnostics), diagnostics


def test_security_exposure_is_at_most_2_0() -> None:
    status, score = exposure(UNIT, threshold=round(MAX_EXPOSURE * 10))
    assert score <= MAX_EXPOSURE
    assert status == 0


def test_security_threshold_rejects_an_unhardened_unit(tmp_path: Path) -> None:
    # Proves the threshold flag means what the test above assumes on this systemd version.
    plain = tmp_path / "plain.service"
    plain.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    status, score = exposure(plain, threshold=round(MAX_EXPOSURE * 10))
    assert score > MAX_EXPOSURE
    assert status != 0


def test_unit_settings_required_by_the_daemon() -> None:
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]  # notify-reload needs systemd >= 253; Debian 12 has 252
    assert settings["NotifyAccess"] == ["main"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Restart"] == ["on-failure"]
    assert "WatchdogSec" in settings
    assert "TimeoutStopSec" in settings
    assert settings["StateDirectory"] == ["telemetryd"]
    assert settings["ConfigurationDirectory"] == ["telemetryd"]
    assert settings["DynamicUser"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["SystemCallErrorNumber"] == ["EPERM"]
    assert sorted(settings["RestrictAddressFamilies"][0].split()) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # prometheus-client's process collector reads /proc/stat, which ProcSubset=pid hides.
    assert "ProcSubset" not in settings


def test_example_config_matches_the_unit(tmp_path: Path) -> None:
    config = tomllib.loads(EXAMPLE_CONFIG.read_text())
    settings = unit_settings(UNIT.read_text())
    # StateDirectory= is the only writable place under ProtectSystem=strict.
    assert config["checkpoint"]["state_dir"] == "/var/lib/" + settings["StateDirectory"][0]
    assert "/etc/telemetryd/telemetryd.toml" in settings["ExecStart"][0]
    result = subprocess.run(
        [str(VENV / "bin" / "telemetryd"), "check-config", "--config", str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_install_config_keeps_an_existing_config(staged: Path) -> None:
    config = staged / "etc/telemetryd/telemetryd.toml"
    assert config.read_text() == EXAMPLE_CONFIG.read_text()
    config.write_text("# local\n")
    make("install-unit", "install-config", f"DESTDIR={staged}", f"PREFIX={VENV}")
    assert config.read_text() == "# local\n"
    example = staged / str(VENV).lstrip("/") / "share/doc/telemetryd/telemetryd.toml.example"
    assert example.read_text() == EXAMPLE_CONFIG.read_text()
