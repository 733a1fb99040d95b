"""The SDK's types are a promise (clients/py.typed): `mypy --strict clients/` is clean."""
import subprocess
import sys

from tests.server_proc import ROOT


def test_sdk_when_type_checked_strictly_then_clean():
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "clients/"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ROOT / "clients" / "py.typed").exists()


def test_sdk_when_inspected_then_every_public_method_has_a_docstring():
    import inspect

    import clients
    missing = []
    for cls in (clients.Client, clients.SyncClient, clients.Subscription, clients.SyncSubscription, clients.Symbol):
        for name, member in vars(cls).items():
            if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, (classmethod,
                                                                                                 property))):
                if not inspect.getdoc(member.__func__ if isinstance(member, classmethod) else member):
                    missing.append(f"{cls.__name__}.{name}")
    assert missing == []
