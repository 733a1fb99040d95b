"""The SDK's types are a promise (clients/py.typed): `mypy --strict clients/` is clean."""
import subprocess
import sys

from tests.server_proc import ROOT


def test_sdk_when_type_checked_strictly_then_clean():
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "clients/"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ROOT / "clients" / "py.typed").exists()
