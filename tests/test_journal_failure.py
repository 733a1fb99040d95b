"""Journal write failures in a real server: a full disk (a size-limited tmpfs under the journal)
and an injected fdatasync EIO (strace attached to the server). State changes stop with the
documented reason (JOURNAL_UNAVAILABLE), readiness goes false, nothing acknowledged is lost,
nothing refused is kept, and trading resumes once the disk takes writes again."""
import errno
import json
import os
import shutil
import subprocess
import time

import pytest

from protocol import wire
from protocol.codes import Reject, Side
from protocol.wire import MsgType
from tests.test_ops import get
from tests.test_server_session import Raw

FAST_RETRY = "snapshot_every = 0\nretry_interval_ms = 100"


class Trader:
    """One order at a time, each answer recorded: what was acknowledged and what was refused."""

    def __init__(self, srv, account=1):
        self.c = Raw(srv.port)
        self.c.logon(account, next_seq=10**9)
        self.clid = 0
        self.acked = {}         # client order id -> order id
        self.refused = []

    def order(self):
        self.clid += 1
        self.c.order(self.clid, Side.SELL, 1, 1000 + self.clid)
        t, body, _ = self.c.until_any((MsgType.ACCEPTED, MsgType.REJECTED))
        if t == MsgType.ACCEPTED:
            self.acked[self.clid] = int(body["order_id"])
            return True
        assert (int(body["reason"]), int(body["seq"])) == (Reject.JOURNAL_UNAVAILABLE, 0)
        self.refused.append(self.clid)
        return False


def wait_ready(srv, want, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (get(srv, "/health/ready")[0] == 200) == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"ready never became {want}: {get(srv, '/health/detailed')}")


def open_orders(srv, account=1):
    c = Raw(srv.port)
    c.logon(account, next_seq=10**9)
    c.send(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=1))
    out = {}
    while True:
        t, body, ents = c.until(MsgType.OPEN_ORDERS)
        out.update({int(e["client_order_id"]): int(e["order_id"]) for e in ents})
        if not int(body["more"]):
            return out


def check_after_restart(srv, trader):
    srv.kill9()
    srv.start()
    assert open_orders(srv) == trader.acked              # every acknowledged order, nothing refused


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(path, size):
        if os.geteuid() != 0:
            pytest.skip("disk-full test needs root to mount a size-limited tmpfs")
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounts.append(path)
        return path
    yield make
    for m in mounts:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def fill(directory):
    """Write a file until the filesystem is full; return its path."""
    path = directory / "filler"
    block = b"\xa5" * (1 << 16)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return path


def halted_by_full_disk(server_factory, tmpfs):
    """A server whose journal sits on a 4 MiB tmpfs that a filler file made full, halted by a
    failed commit: (server, trader, the tmpfs, the filler)."""
    srv = server_factory(journal_extra=FAST_RETRY)
    disk = tmpfs(srv.dir / "journal", "4m")
    srv.start()
    t = Trader(srv)
    for _ in range(20):
        assert t.order()
    filler = fill(disk)
    for _ in range(3000):                                 # until a commit needs a page the disk lacks
        if not t.order():
            break
    assert t.refused, "the journal never hit the full disk"
    wait_ready(srv, False)
    return srv, t, disk, filler


def test_disk_full_when_journal_cannot_grow_then_refused_nothing_lost_and_resumes(server_factory, tmpfs):
    srv, t, disk, filler = halted_by_full_disk(server_factory, tmpfs)
    status = json.loads(get(srv, "/health/detailed")[1])
    # ENOSPC, or EIO: LMDB reports a write cut short by the full disk as EIO (mdb_page_flush), and
    # whether a commit's pwritev is cut short or refused outright depends on its page layout
    error = status["journal"]["error"].lower()
    assert status["journal"]["writable"] is False and ("space" in error or "input/output error" in error)
    assert not t.order()                                  # still refused: nothing can be journaled
    assert "journal unavailable" in srv.output()
    filler.unlink()
    wait_ready(srv, True)
    assert "journal writable again" in srv.output()
    for _ in range(10):
        assert t.order()
    check_after_restart(srv, t)


def test_fdatasync_eio_when_injected_then_halts_and_resumes_after(server_factory):
    if shutil.which("strace") is None:
        pytest.skip("strace not installed: cannot inject an fdatasync error (apt-get install strace)")
    srv = server_factory(journal_extra=FAST_RETRY).start()
    t = Trader(srv)
    for _ in range(10):
        assert t.order()
    log = srv.dir / "strace.log"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(srv.proc.pid), "-e", "trace=fdatasync",
                               "-e", "inject=fdatasync:error=EIO", "-o", str(log)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
            if tracer.poll() is not None:
                pytest.skip(f"strace cannot attach here: {tracer.stderr.read().decode().strip()}")
            get(srv, "/health/live")                      # keep the loop busy until a traced call shows
            t.c.send(wire.encode(MsgType.HEARTBEAT))
            time.sleep(0.05)
            if not t.order():                             # the first commit under injection fails
                break
        assert t.refused, f"no commit failed under injection: {log.read_text() if log.exists() else ''}"
        wait_ready(srv, False)
        time.sleep(0.3)                                   # several probes, all failing under injection
        assert not t.order()
        assert "EIO" in log.read_text() or "Input/output" in log.read_text()
    finally:
        tracer.terminate()                                # detaches: fdatasync works again
        tracer.wait(10)
    wait_ready(srv, True)
    for _ in range(5):
        assert t.order()
    check_after_restart(srv, t)
