"""The server-subprocess harness; it lives in engine/testing.py (perf/ uses it too, from an
installed package)."""
from engine.testing import BASE_CONFIG, ENGINE, ROOT, SECRETS, ServerProc, shared_dir  # noqa: F401
