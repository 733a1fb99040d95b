"""What the sdist and the wheel hold (MANIFEST.in, pyproject.toml): the sdist everything to build,
test and deploy, the wheel no generated C. Computed by setuptools itself (egg_info's manifest and
build_py's package data) without compiling; .ci/run also builds both and installs the sdist."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from pathlib import Path
import setuptools  # noqa: F401  (provides distutils on Python >= 3.12)
from distutils.core import run_setup
dist = run_setup("setup.py", script_args=["-q", "egg_info", "--egg-base", sys.argv[1]], stop_after="run")
build_py = dist.get_command_obj("build_py")
build_py.ensure_finalized()
sources = next(Path(sys.argv[1]).glob("*.egg-info")) / "SOURCES.txt"
print(json.dumps({"sdist": sources.read_text().split(),
                  "wheel_data": [str(Path(src, f).relative_to(Path.cwd())) if Path(src).is_absolute()
                                 else str(Path(src, f)) for _, src, _, files in build_py.data_files for f in files]}))
"""


@pytest.fixture(scope="module")
def contents(tmp_path_factory):
    out = tmp_path_factory.mktemp("egg")
    r = subprocess.run([sys.executable, "-c", PROBE, str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_sdist_when_listed_then_it_holds_tests_helpers_systemd_docs_and_license(contents):
    sdist = set(contents["sdist"])
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    assert on_disk - sdist == set()                   # conftest, server_proc, models: every test helper
    assert {"tests/conftest.py", "tests/server_proc.py", "systemd/install.sh", "systemd/trading-engine.service",
            "systemd/README.md", "protocol/SPEC.md", "LICENSE", "README.md", "engine/core.pyx"} <= sdist


def test_sdist_and_wheel_when_listed_then_no_generated_c(contents):
    assert [f for f in contents["sdist"] if f.endswith((".c", ".cpp", ".so"))] == []
    wheel = set(contents["wheel_data"])
    assert [f for f in wheel if f.endswith((".c", ".cpp", ".html"))] == []
    assert {"engine/core.pyx", "engine/core.pxd", "protocol/cdefs.pxd", "engine/default_config.toml"} <= wheel
