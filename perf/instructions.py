"""Instructions per command of the matching core with risk off and with every risk check on,
counted by callgrind: the same count on every run of the same build to within a few hundred
instructions in hundreds of millions (memcpy's path depends on the address layout), where
wall-time ratios of the same binary spread by +-0.2 on this shared VM (perf/RESULTS.md). The commands are made once
(perf/workload.py, the core mix) and loaded by each counted child; collection is toggled on
Engine.run only, so the count is the core's (and risk's) alone. Needs valgrind."""
from __future__ import annotations

import os
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
e = workload.make_engine(int(sys.argv[2]), risk=sys.argv[3] == "on")
e.run(cmds)
"""


def count(cmds_file, symbols, risk, tmp):
    """Instructions executed inside Engine.run over the saved commands."""
    out = Path(tmp) / f"callgrind.{symbols}.{risk}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=*Engine_*run*",
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
            n = len(cmds)
            results[f"{symbols}_symbols"] = dict(commands=n, risk_off=off, risk_on=on,
                                                 per_command_off=off / n, per_command_on=on / n,
                                                 risk_per_command=(on - off) / n, off_over_on=off / on)
    return results
