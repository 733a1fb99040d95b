"""kill -9 of the server during sustained load from several clients, repeated at random points
(TE_KILL_ROUNDS, default 3; TE_KILL_SEED): after each restart every report any client saw
acknowledged comes back identical at the same sequence number, and the recovered state (newest
snapshot + journal tail) equals a clean replay of the whole journal by the replay tool."""
import os
import random
import re
import subprocess
import sys

from tests.load import lost_reports, run_load
from tests.server_proc import ROOT

ROUNDS = int(os.environ.get("TE_KILL_ROUNDS", "3"))


def recovered(srv):
    """(next command seq, state_hash) the last start-up logged."""
    seq, h = re.findall(r"next seq (\d+), state_hash (0x[0-9a-f]+)", srv.output())[-1]
    return int(seq), h


def clean_replay_hash(srv, until):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "replay", str(srv.dir / "journal"),
                          "--config", str(srv.config), "--until", str(until)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return re.search(r"state_hash (0x[0-9a-f]+)", out.stdout).group(1)


def test_kill9_under_load_when_repeated_then_nothing_acknowledged_lost_and_state_is_the_journals(server_factory):
    srv = server_factory(journal_extra="snapshot_every = 3000").start()
    rng = random.Random(int(os.environ.get("TE_KILL_SEED", "1")))
    reports = {1: {}, 2: {}, 3: {}}
    for r in range(ROUNDS):
        run_load(srv.port, reports, rng.uniform(0.3, 1.2), seed=rng.randrange(1 << 30), kill=srv.kill9)
        srv.start()
        assert lost_reports(srv.port, reports) == []
        next_seq, h = recovered(srv)
        assert clean_replay_hash(srv, next_seq - 1) == h
    assert all(len(seen) > 100 for seen in reports.values()), {a: len(s) for a, s in reports.items()}
    assert "loaded snapshot" in srv.output()        # at least one restart went through a snapshot
