"""The unit file passes systemd-analyze verify (skips where systemd-analyze is absent); install.sh
generates real secrets, refuses demo ones, puts the command on the PATH, derives CPUAffinity from
[server] cpu and names a missing prerequisite."""
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from engine import config as cfgmod
from engine.admin import check_password

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "trading-engine.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_when_verified_then_no_errors(tmp_path):
    # ExecStart must exist for verify: point it at a real executable, keep everything else.
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "ProtectSystem=strict" in text
    unit = tmp_path / "trading-engine.service"
    unit.write_text(text.replace("/opt/trading-engine/venv/bin/trading-engine", shutil.which("true")))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    # verify exits 0 even for an unknown key (it only warns), so any output is a failure
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


# -- systemd/install.sh, into a temp root (--root: no user, no chown, no systemctl) with this
# virtualenv as the installed package (--venv: no pip install) --

INSTALL = UNIT.parent / "install.sh"
DEMO = Path(__file__).resolve().parents[1] / "engine" / "default_config.toml"


def install(root, *args, env=None):
    venv = Path(sys.executable).parent.parent
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), "--venv", str(venv), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def unit_affinity(root):
    text = (root / "etc/systemd/system/trading-engine.service").read_text()
    return [line for line in text.splitlines() if line.startswith("CPUAffinity")]


def test_install_when_fresh_then_generated_owner_only_secrets_and_no_demo_ones(tmp_path):
    root = tmp_path / "root"
    r = install(root, "--cpu", "1", "--helper-cpus", "2 3")
    assert r.returncode == 0, r.stdout + r.stderr
    etc = root / "etc/trading-engine"
    config = etc / "config.toml"
    cfg = cfgmod.load(config)
    assert not [a for a in cfg.accounts if a.demo_secret is not None]
    assert not [a for a in cfg.admins if a.demo_password is not None or a.password_env is not None]
    secrets = set()
    for a in cfg.accounts:                          # each in its own owner-only file, printed
        assert a.secret_file == f"/etc/trading-engine/secrets/{a.name}.secret" and a.secret_file in r.stdout
        local = root / a.secret_file.lstrip("/")
        assert stat.S_IMODE(local.stat().st_mode) == 0o600
        secrets.add(cfgmod.account_secret(msgspec.structs.replace(a, secret_file=str(local))))
    assert len(secrets) == len(cfg.accounts) and all(len(s) >= 32 and b"demo" not in s for s in secrets)
    password = (etc / "secrets/admin.password").read_text().strip()
    assert check_password(password, cfg.admins[0].password_scrypt)
    assert "/etc/trading-engine/secrets/admin.password" in r.stdout
    assert stat.S_IMODE((etc / "secrets/admin.password").stat().st_mode) == 0o600
    # on the PATH, and the unit's CPUAffinity derived from [server] cpu
    link = root / "usr/local/bin/trading-engine"
    assert os.readlink(link) == str(Path(sys.executable).parent / "trading-engine")
    assert cfg.server.cpu == 1 and unit_affinity(root) == ["CPUAffinity=1 2 3"]
    assert cfg.journal.path == "/var/lib/trading-engine/journal"


def test_install_when_config_holds_demo_secrets_then_refuses_to_start(tmp_path):
    root = tmp_path / "root"
    (root / "etc/trading-engine").mkdir(parents=True)
    (root / "etc/trading-engine/config.toml").write_text(DEMO.read_text())
    r = install(root)
    assert r.returncode == 1 and "REFUSING to start" in r.stderr
    assert "account demo1 (demo_secret)" in r.stderr and "operator admin (demo_password)" in r.stderr
    assert (root / "etc/trading-engine/config.toml").read_text() == DEMO.read_text()   # never overwritten


def test_install_when_config_cpu_changes_then_unit_affinity_follows(tmp_path):
    root = tmp_path / "root"
    assert install(root, "--cpu", "1").returncode == 0
    config = root / "etc/trading-engine/config.toml"
    config.write_text(config.read_text().replace("cpu = 1 ", "cpu = 3 ", 1))
    r = install(root)                                  # the config is kept, the unit follows it
    assert r.returncode == 0, r.stderr
    assert cfgmod.load(config).server.cpu == 3 and unit_affinity(root) == ["CPUAffinity=3"]
    config.write_text(re.sub(r"(?m)^cpu = .*\n", "", config.read_text()))
    assert install(root).returncode == 0 and unit_affinity(root) == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_install_when_unit_written_then_it_verifies(tmp_path):
    root = tmp_path / "root"
    assert install(root, "--cpu", "1").returncode == 0
    r = subprocess.run(["systemd-analyze", "verify", str(root / "etc/systemd/system/trading-engine.service")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_install_when_prerequisites_missing_then_one_clear_line(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -V ] && echo 'Python 3.9.2' && exit 0\nexit 1\n")
    fake.chmod(0o755)
    r = subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path / "root")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=str(fake)))
    assert r.returncode == 1 and "is Python 3.9.2: trading-engine needs Python 3.11 or newer" in r.stderr
    r = subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path / "root")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=sys.executable, CC="no-such-cc"))
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "install.sh: no C compiler (CC=no-such-cc): install one (Debian/Ubuntu: apt-get install build-essential; "
        "RHEL: gcc)"], r.stderr
