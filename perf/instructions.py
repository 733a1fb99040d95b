"""Instructions per command of the matching core with risk off and with every risk check on,
counted by callgrind: the same count on every run of the same build to within a few hundred
instructions in hundreds of millions (memcpy's path depends on the address layout), where
wall-time ratios of the same binary spread by +-0.2 on this shared VM (perf/RESULTS.md). The commands are made once
(perf/workload.py, the core mix) and loaded by each counted child; collection is toggled on
Engine.run only, so the count is the core's (and risk's) alone: on the exact symbol of its
Python wrapper (`__pyx_pw_..._Engine_<n>run`, read from the module with nm), never a pattern that
also matches Engine.run_triggers or run_timed (callgrind toggles collection off again on entering a
second matching function: a `*Engine_*run*` pattern undercounted by ~1.6%). Needs valgrind and nm."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from perf import workload

ROOT = Path(__file__).resolve().parents[1]
CHILD = """import sys
import numpy as np
from perf import workload
cmds = np.load(sys.argv[1])
e = workload.make_engine(int(sys.argv[2]), risk=sys.argv[3] != "off", var=sys.argv[3] != "novar")
e.run(cmds)
"""


def core_functions() -> list[str]:
    """The function symbols of the built engine.core module (nm)."""
    from engine import core
    out = subprocess.run(["nm", core.__file__], check=True, capture_output=True, text=True).stdout
    return [line.split()[2] for line in out.splitlines() if len(line.split()) == 3 and line.split()[1] in "tT"]


def run_symbol() -> str:
    """The one function callgrind toggles collection on: Engine.run's Python wrapper (the
    implementation is inlined into it, or called from it)."""
    (name,) = [f for f in core_functions() if re.fullmatch(r"__pyx_pw_6engine_4core_6Engine_\d+run", f)]
    return name


def count(cmds_file, symbols, risk, tmp):
    """Instructions executed inside Engine.run over the saved commands."""
    out = Path(tmp) / f"callgrind.{symbols}.{risk}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--toggle-collect={run_symbol()}",
                    sys.executable, "-c", CHILD, str(cmds_file), str(symbols), risk],
                   cwd=ROOT, check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def scenario(args):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for symbols in args.symbols:
            cmds, _ = workload.generate(args.count_n, symbols=symbols, seed=args.seed)
            path = Path(tmp) / f"cmds{symbols}.npy"
            np.save(path, cmds)
            off, on = count(path, symbols, "off", tmp), count(path, symbols, "on", tmp)
            novar = count(path, symbols, "novar", tmp)
            n = len(cmds)
            results[f"{symbols}_symbols"] = dict(commands=n, risk_off=off, risk_on=on,
                                                 per_command_off=off / n, per_command_on=on / n,
                                                 risk_per_command=(on - off) / n, off_over_on=off / on,
                                                 # MAX_VAR unset: the pre-trade VaR check's cost is the difference
                                                 risk_no_var=novar, var_check_per_command=(on - novar) / n)
    return results
