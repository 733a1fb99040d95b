"""The embedded demo config covers the README: a demo operator on the admin listener, whose
password comes from TRADING_ENGINE_ADMIN_PASSWORD, else the demo default (with a warning)."""
import json
import os
import re
import subprocess
import sys
import time
from importlib import resources

from engine import config as cfgmod
from tests.server_proc import ROOT

DEMO_PASSWORD = "demo-admin-password"


def demo_config(tmp_path):
    """The embedded demo config as shipped, on ephemeral ports and with its journal in tmp_path."""
    text = resources.files("engine").joinpath("default_config.toml").read_text()
    ports = "".join(f'{k} = 0\n{k}_file = "{tmp_path}/{k}"\n' for k in ("port", "ops_port", "admin_port"))
    text = re.sub(r"(?m)^(port|ops_port|admin_port)(_file)? = .*\n", "", text)
    text, n = re.subn(r"(?m)^\[server\]\n", "[server]\n" + ports, text)
    assert n == 1
    text, n = re.subn(r"(?m)^path = .*$", f'path = "{tmp_path}/journal"', text)
    assert n == 1
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


def start(tmp_path, env):
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config", str(demo_config(tmp_path))],
                            cwd=tmp_path, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not (tmp_path / "admin_port").exists():
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.05)
    return proc, int((tmp_path / "admin_port").read_text())


def admin(port, password, *args):
    env = dict(os.environ, TRADING_ENGINE_ADMIN_USER="admin", TRADING_ENGINE_ADMIN_PASSWORD=password,
               TRADING_ENGINE_ADMIN_PORT=str(port), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "engine.cli", "admin", *args], env=env, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


def test_demo_config_when_loaded_then_it_has_an_operator():
    cfg = cfgmod.load(None)
    assert [a.name for a in cfg.admins] == ["admin"]
    assert cfg.server.admin_port is not None


def test_demo_when_password_unset_then_admin_status_works_with_the_demo_default_and_warns(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRADING_ENGINE_ADMIN_PASSWORD"}
    env["PYTHONPATH"] = str(ROOT)
    proc, port = start(tmp_path, env)
    try:
        rc, resp = admin(port, DEMO_PASSWORD, "status")
        assert rc == 0 and resp["ok"], resp
        assert admin(port, "wrong-password", "status")[0] == 1
    finally:
        proc.kill()
        proc.wait(10)
    log = (tmp_path / "server.log").read_text()
    assert "admin admin uses the demo password" in log and "TRADING_ENGINE_ADMIN_PASSWORD" in log


def test_demo_when_password_set_then_only_it_is_accepted_and_no_warning(tmp_path):
    env = dict(os.environ, TRADING_ENGINE_ADMIN_PASSWORD="a-real-operator-password", PYTHONPATH=str(ROOT))
    proc, port = start(tmp_path, env)
    try:
        assert admin(port, "a-real-operator-password", "status")[0] == 0
        rc, resp = admin(port, DEMO_PASSWORD, "status")
        assert rc == 1 and resp == {"ok": False, "error": "authentication failed"}
    finally:
        proc.kill()
        proc.wait(10)
    assert "demo password" not in (tmp_path / "server.log").read_text()


def test_admin_config_when_both_or_neither_password_then_config_error(tmp_path):
    base = demo_config(tmp_path).read_text()
    for extra in ('password_scrypt = "scrypt$1$8$1$00$00"\n', ""):
        text = base.replace('demo_password = "demo-admin-password"\n', extra)
        if not extra:
            text = text.replace('password_env = "TRADING_ENGINE_ADMIN_PASSWORD"\n', "")
        p = tmp_path / "bad.toml"
        p.write_text(text)
        try:
            cfgmod.load(p)
        except cfgmod.ConfigError as e:
            assert "admin admin: exactly one of password_scrypt, password_env" in str(e)
        else:
            raise AssertionError("loaded")
