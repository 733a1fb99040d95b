"""Journal replay and restart cost: the work a restart does, measured outside the server.

Builds a journal of the core workload (perf/workload.py) in batches of --batch commands
(async durability: building it is not what is measured), then times
  replay    Journal.batches() (checksums, chain, gaps) + Engine.feed + the byte-for-byte
            comparison with the journaled events: exactly what start-up does without a snapshot
  snapshot  writing one snapshot of the final state, and loading + importing it
"""
from __future__ import annotations

import tempfile
import time

import numpy as np

from engine import snapshot
from engine.journal import Journal
from perf import workload


def scenario(args):
    cmds, _ = workload.generate(args.n, symbols=1, seed=args.seed)
    cmds["seq"] = np.arange(1, len(cmds) + 1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(tmp + "/journal", durability="async", map_size=1 << 32)
        e = workload.make_engine(1, max_orders=args.max_orders)
        events_total = 0
        for start in range(0, len(cmds), args.batch):
            batch = cmds[start:start + args.batch]
            e.feed(batch)
            events_total += e.ev_count
            j.append(batch, e.events_view())
            e.clear_events()
        j.sync()
        final_hash = e.state_hash()
        rates = []
        for _ in range(args.runs):
            r = workload.make_engine(1, max_orders=args.max_orders)
            t = time.perf_counter()
            n = 0
            for bc, be in j.batches():
                r.feed(np.ascontiguousarray(bc))
                if r.events_view().tobytes() != be.tobytes():
                    raise AssertionError("replay diverged")
                r.clear_events()
                n += len(bc)
            dt = time.perf_counter() - t
            assert r.state_hash() == final_hash
            rates.append(dt)
        dt = float(np.median(rates))
        out["replay"] = dict(commands=len(cmds), events=events_total, batch=args.batch, seconds=dt,
                             commands_per_s=len(cmds) / dt, events_per_s=events_total / dt,
                             records_per_s=(len(cmds) + events_total) / dt)
        t = time.perf_counter()
        path = snapshot.write(tmp, e.export_state(), last_seq=len(cmds))
        w = time.perf_counter() - t
        t = time.perf_counter()
        _, state, _ = snapshot.read(path)
        r = workload.make_engine(1, max_orders=args.max_orders)
        r.import_state(state)
        load = time.perf_counter() - t
        assert r.state_hash() == final_hash
        out["snapshot"] = dict(bytes=path.stat().st_size, write_s=w, load_and_import_s=load,
                               max_orders=args.max_orders)
        j.close()
    return out
