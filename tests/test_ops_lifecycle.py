"""Operations over the server's life: SIGTERM while several clients trade (exit 0,
END_OF_SESSION to each, nothing acknowledged lost, the next start loads the shutdown
snapshot and replays nothing), and readiness that stays 503 through a long recovery."""
import json
import os
import threading
import time

import numpy as np

from engine import config as cfgmod
from engine.server import Server
from protocol import wire
from protocol.codes import CommandKind, OrderType, SelfTradePrevention, Side, TimeInForce
from protocol.wire import MsgType
from tests.server_proc import SECRETS
from tests.test_ops import get
from tests.test_server_session import Raw


class Trader:
    """A client sending orders and cancels as fast as the server takes them, in one thread,
    and keeping, from the reports it reads in another, what it was told: its open orders,
    the sequence numbers and the highest client order id acknowledged."""

    def __init__(self, port, account):
        self.account = account
        self.raw = Raw(port)
        t, body, _ = self.raw.logon(account)
        assert t == MsgType.LOGON_ACCEPTED
        self.raw.sock.settimeout(None)
        self.open = {}               # order id -> leaves, from the reports
        self.seqs = []
        self.acked_clid = 0
        self.end_of_session = None
        self.sent = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.send, daemon=True), threading.Thread(target=self.read, daemon=True)]
        for t in self.threads:
            t.start()

    def send(self):
        rng = np.random.default_rng(self.account)
        clid = 0
        try:
            while not self.stop.is_set():
                frames = []
                for _ in range(8):
                    clid += 1
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    price = int(100 + (rng.integers(0, 6) if side == Side.BUY else rng.integers(-5, 1)))
                    frames.append(wire.encode(MsgType.NEW_ORDER, client_order_id=clid, symbol=1, side=side,
                                              order_type=OrderType.LIMIT, tif=TimeInForce.GTC, stp=1, price=price,
                                              qty=int(rng.integers(1, 5))))
                    if clid > 20 and rng.random() < 0.4:
                        frames.append(wire.encode(MsgType.CANCEL, client_order_id=clid - 20))
                self.raw.sock.sendall(b"".join(frames))
                self.sent = clid
                time.sleep(0.001)
        except OSError:
            pass                     # the server closed the connection at shutdown

    def read(self):
        buf = b""
        while True:
            try:
                data = self.raw.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                return
            buf += data
            frames, used = wire.decode(buf)
            buf = buf[used:]
            for t, body, _ in frames:
                if MsgType.ACCEPTED <= t <= MsgType.MASS_CANCEL_DONE:
                    self.seqs.append(int(body["seq"]))
                    oid, leaves = int(body["order_id"]), int(body["leaves"])
                    if t in (MsgType.ACCEPTED, MsgType.REJECTED) and int(body["cmd_kind"]) == CommandKind.NEW_ORDER:
                        self.acked_clid = max(self.acked_clid, int(body["client_order_id"]))
                    if t in (MsgType.ACCEPTED, MsgType.FILL):
                        self.open[oid] = leaves
                    if t == MsgType.CANCELLED or (t == MsgType.FILL and leaves == 0):
                        self.open.pop(oid, None)
                elif t == MsgType.END_OF_SESSION:
                    self.end_of_session = int(body["last_seq"])


def test_sigterm_when_clients_trading_then_exit_0_nothing_lost_and_restart_replays_nothing(server_factory):
    srv = server_factory().start()
    traders = [Trader(srv.port, account) for account in (1, 2, 3, 4)]
    while min(len(t.seqs) for t in traders) < 300:        # everyone is trading
        time.sleep(0.05)
    assert srv.terminate(timeout=30) == 0
    for t in traders:
        t.stop.set()
        for th in t.threads:
            th.join(10)
    for t in traders:
        assert t.seqs == list(range(1, len(t.seqs) + 1)), t.account      # every report, in order, no gap
        assert t.end_of_session == len(t.seqs), t.account                  # END_OF_SESSION after the last one
    srv.start()
    d = json.loads(get(srv, "/health/detailed")[1])
    assert d["recovery"]["replayed_commands"] == 0
    assert d["recovery"]["snapshot_seq"] == d["journal"]["last_seq"] > 0 and "loaded snapshot" in srv.output()
    for t in traders:
        c = Raw(srv.port)
        _, body, _ = c.logon(t.account, next_seq=len(t.seqs) + 1)
        assert (int(body["next_seq"]), int(body["next_client_order_id"])) == (len(t.seqs) + 1, t.acked_clid + 1)
        c.send(wire.encode(MsgType.OPEN_ORDERS_REQUEST, request_id=1))
        server_open = {}
        while True:                              # a long answer comes in several frames
            _, head, ents = c.until(MsgType.OPEN_ORDERS)
            server_open.update({int(e["order_id"]): int(e["leaves"]) for e in ents})
            if not int(head["more"]):
                break
        assert server_open == t.open and len(t.open) > 0, t.account


def make_journal(proc, commands, per_batch, monkeypatch):
    """Journal `commands` commands through the server's own flush path (same config, so the
    replay is byte-identical), with no snapshot: a start-up must replay all of it."""
    for acct, secret in SECRETS.items():
        monkeypatch.setenv(f"TE_TEST_SECRET_{acct}", secret)
    cfg = cfgmod.load(proc.config)
    cfg.journal.durability = "async"          # building the fixture: no fsync per batch
    srv = Server(cfg)
    rng = np.random.default_rng(3)
    for first in range(0, commands, per_batch):
        i = np.arange(first, first + per_batch)
        cmds = srv.pending[:per_batch]
        cmds[...] = 0
        cmds["kind"] = CommandKind.NEW_ORDER
        cmds["account"] = i % 4 + 1
        cmds["client_order_id"] = i // 4 + 1
        cmds["symbol"] = 1
        cmds["side"] = np.where(i % 2, Side.SELL, Side.BUY)
        cmds["order_type"] = OrderType.LIMIT
        cmds["tif"] = np.where(i % 3 == 0, TimeInForce.IOC, TimeInForce.GTC)     # passive adds, some takers
        cmds["stp"] = SelfTradePrevention.NONE
        cmds["price"] = 1000 + np.where(i % 2, 1, -1) * rng.integers(-3, 20, per_batch)
        cmds["qty"] = rng.integers(1, 5, per_batch)
        srv.apply_written(per_batch)
        srv.flush()
    srv.journal.close()
    return cfg


def test_ready_when_recovering_a_long_journal_then_503_until_done_while_live(server_factory, monkeypatch):
    srv = server_factory(durability="async")
    make_journal(srv, 600_000, 50, monkeypatch)   # 12,000 batches; recovery yields to the loop every 64
    srv.start(wait_listening=False)               # the health port is up before recovery starts
    seen = []
    while True:
        status = get(srv, "/health/ready")[0]
        if status == 503 and not seen:
            assert get(srv, "/health/live")[0] == 200     # alive while not ready
            d = json.loads(get(srv, "/health/detailed")[1])
            assert d["ready"] is False
        seen.append(status)
        if status == 200:
            break
    assert seen[0] == 503 and set(seen) == {503, 200}
    assert "recovered: 600000 commands replayed" in srv.output()


def _threads(pid):
    """{thread name: (allowed CPUs, nice)} of a live process, from /proc."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as f:
            name = f.read().strip()
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
        out[name if int(task) != pid else "main"] = (os.sched_getaffinity(int(task)), nice)
    return out


def test_helpers_when_the_engine_is_pinned_then_they_keep_off_its_core(server_factory, tmp_path):
    # With [server] cpu set, an admin logon's scrypt (and the snapshot writer) must not take the
    # engine's core from its event loop: they run on the process's other CPUs, or, when it may
    # use only that core, at nice 19.
    from tests.test_admin import HASH, admin
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    srv = server_factory(server_extra=f"cpu = {cpu}", admins={"ops": HASH}).start()
    rc, _ = admin(srv, "status")                               # the first password check starts a helper
    assert rc == 0
    threads = _threads(srv.proc.pid)
    assert threads["main"][0] == {cpu}
    helpers = [v for k, v in threads.items() if k == "te-helper"]
    assert helpers, threads
    for cpus, nice in helpers:
        if allowed - {cpu}:
            assert cpus == allowed - {cpu} and cpus.isdisjoint({cpu})
        else:
            assert cpus == {cpu} and nice == 19


def test_snapshot_child_when_forked_then_on_child_runs_in_the_child_first(tmp_path):
    from engine import snapshot
    marker = tmp_path / "child"
    (tmp_path / "snaps").mkdir()
    pid = snapshot.fork_write(tmp_path / "snaps", {"a": np.arange(3)}, 7,
                              on_child=lambda: marker.write_text(str(os.getpid())))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert marker.read_text() == str(pid)
    assert snapshot.load_latest(tmp_path / "snaps")[1] == 7
