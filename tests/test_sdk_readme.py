"""README.md's SDK examples run, as written, against a real server with the embedded demo
config (only the port number differs: the test server listens on an ephemeral port)."""
import os
import re
import subprocess
import sys

import pytest

from tests.server_proc import ROOT, ServerProc


def readme_programs():
    """The README's complete Python programs (the blocks that import the SDK at their top)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b for b in blocks if re.match(r"(import asyncio\n)?from clients import", b)]


@pytest.fixture
def demo_server(tmp_path):
    s = ServerProc(tmp_path / "demo")
    lines = []
    for line in (ROOT / "engine" / "default_config.toml").read_text().splitlines():
        if re.match(r"\s*(port|port_file|ops_port|ops_port_file|admin_port|admin_port_file)\s*=", line):
            continue                                  # ephemeral ports instead of 7001-7003
        if re.match(r"\s*path\s*=\s*\"\./trading-engine-journal\"", line):
            line = f'path = "{s.dir / "journal"}"'
        lines.append(line)
        if line.strip() == "[server]":
            lines += ["port = 0", f'port_file = "{s.dir / "port"}"', "ops_port = 0",
                      f'ops_port_file = "{s.dir / "ops_port"}"', "admin_port = 0",
                      f'admin_port_file = "{s.dir / "admin_port"}"']
    s.config.write_text("\n".join(lines) + "\n")
    s.start()
    yield s
    s.stop()


def test_readme_sdk_examples_when_run_then_work(demo_server):
    programs = readme_programs()
    assert len(programs) >= 2                         # the asyncio example and the blocking one
    for program in programs:
        code = program.replace("7001", str(demo_server.port))
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert r.returncode == 0, program + r.stdout + r.stderr
        assert "accepted" in r.stdout or "OrderInfo" in r.stdout, r.stdout
