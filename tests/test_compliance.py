"""Compliance pre-trade (engine/RISK.md "KYC"): KYC states and large-order / large-position
thresholds on the core with risk on, then over the protocol through the admin listener, with a
restart and a replay that make the same decisions."""
from __future__ import annotations

import pytest

from protocol.codes import (CommandKind, EventKind as EK, KycState, LimitKind as K, LimitScope as LS, Reject as R,
                            Side)
from tests.test_risk_rules import BTC, EQ, Book, accepted, rejected

BUY, SELL = Side.BUY, Side.SELL


@pytest.fixture
def b():
    book = Book()
    book.e.deposit(1, 10_000_000)
    book.e.deposit(2, 10_000_000)
    return book


def test_kyc_when_pending_or_blocked_then_orders_and_amends_are_rejected_and_cancels_work(b):
    evs = accepted(b.order(1, BUY, 100, 4_400_000))
    oid = evs[0].order_id
    evs = b.e.set_kyc(1, KycState.PENDING)
    assert [(e.kind, e.account, e.reason, e.qty) for e in evs] == [(EK.KYC_STATE, 1, KycState.PENDING, 1)]
    assert rejected(b.order(1, BUY, 100, 4_400_000)) == R.KYC_PENDING
    assert rejected(b.e.command(kind=CommandKind.AMEND, account=1, order_id=oid, qty=200,
                                price=4_400_000)) == R.KYC_PENDING
    b.e.set_kyc(1, KycState.BLOCKED)
    assert rejected(b.order(1, SELL, 100, 4_600_000)) == R.KYC_BLOCKED
    assert b.e.command(kind=CommandKind.CANCEL, account=1, order_id=oid)[0].kind == EK.CANCELLED
    accepted(b.order(2, BUY, 100, 4_400_000))              # other accounts are untouched
    b.e.set_kyc(1, KycState.VERIFIED)
    accepted(b.order(1, BUY, 100, 4_400_000))
    assert b.r.portfolio(1)["kyc"] == KycState.VERIFIED


def test_kyc_default_when_changed_then_accounts_without_their_own_state_follow_it(b):
    assert b.r.kyc_default() == KycState.VERIFIED
    b.e.set_kyc(2, KycState.VERIFIED)                      # its own state
    evs = b.e.set_kyc(0, KycState.PENDING)
    assert [(e.kind, e.account, e.reason) for e in evs] == [(EK.KYC_STATE, 0, KycState.PENDING)]
    assert rejected(b.order(1, BUY, 100, 4_400_000)) == R.KYC_PENDING
    accepted(b.order(2, BUY, 100, 4_400_000))
    evs = b.e.set_kyc(2, 0, clear=True)                    # back to the default
    assert [(e.reason, e.qty) for e in evs] == [(KycState.PENDING, 0)]
    assert rejected(b.order(2, BUY, 100, 4_400_000)) == R.KYC_PENDING
    assert rejected(b.e.set_kyc(0, 0, clear=True)) == R.INVALID_STATE
    assert rejected(b.e.set_kyc(1, 7)) == R.INVALID_STATE
    assert rejected(b.e.set_kyc(7, KycState.VERIFIED)) == R.UNKNOWN_ACCOUNT


def test_large_thresholds_when_flag_mode_then_accepted_and_when_reject_mode_then_refused(b):
    assert rejected(b.limit(LS.DEFAULT, K.LARGE_ORDER_QTY, 50)) == R.INVALID_LIMIT   # qty: symbol scope only
    assert rejected(b.limit(LS.ACCOUNT, K.LARGE_POSITION_QTY, 50, target=1)) == R.INVALID_LIMIT
    assert rejected(b.limit(LS.DEFAULT, K.LARGE_REJECT, 2)) == R.INVALID_LIMIT
    b.limit(LS.SYMBOL, K.LARGE_ORDER_QTY, 100, target=BTC)
    b.limit(LS.SYMBOL, K.LARGE_POSITION_QTY, 250, target=BTC)
    accepted(b.order(1, BUY, 150, 4_400_000))              # flag mode (the default): surveillance alerts
    b.limit(LS.ACCOUNT, K.LARGE_REJECT, 1, target=1)
    assert rejected(b.order(1, BUY, 101, 4_400_000)) == R.LARGE_ORDER
    accepted(b.order(1, BUY, 100, 4_400_000))              # worst case 250: at the threshold
    assert rejected(b.order(1, BUY, 1, 4_400_000)) == R.LARGE_POSITION
    accepted(b.order(1, SELL, 100, 4_600_000))             # does not raise the worst case
    accepted(b.order(1, BUY, 101, 4_400_000, sym=EQ))      # no threshold on EQ
    accepted(b.order(2, BUY, 101, 4_400_000))              # account 2: flag mode
    b.limit(LS.SYMBOL, K.LARGE_REJECT, 1, target=BTC)      # every account without its own mode, on BTC
    assert rejected(b.order(2, BUY, 101, 4_400_000)) == R.LARGE_ORDER
    b.limit(LS.ACCOUNT, K.LARGE_REJECT, 0, target=2)       # an account's own mode wins
    accepted(b.order(2, BUY, 101, 4_400_000))


def test_kyc_and_limits_when_snapshotted_then_restored_and_same_state_bytes(b):
    b.e.set_kyc(1, KycState.BLOCKED)
    b.e.set_kyc(0, KycState.PENDING)
    b.e.set_kyc(2, KycState.VERIFIED)
    b.limit(LS.SYMBOL, K.LARGE_ORDER_QTY, 100, target=BTC)
    b.limit(LS.DEFAULT, K.LARGE_REJECT, 1)
    state = b.r.export_state()
    c = Book()
    c.r.import_state({k: v.copy() for k, v in state.items()})
    assert c.r.state_bytes() == b.r.state_bytes()
    assert rejected(c.order(1, BUY, 100, 4_400_000)) == R.KYC_BLOCKED
    assert rejected(c.order(3, BUY, 100, 4_400_000)) == R.KYC_PENDING
    assert rejected(c.order(2, BUY, 101, 4_400_000)) == R.LARGE_ORDER
    old = {k: v for k, v in state.items() if k != "risk.acct.kyc"}          # a snapshot from before KYC
    old.update({k: state[k].reshape(-1, 25)[:, :22].ravel().copy()
                for k in ("risk.lim_default", "risk.lim_acct", "risk.lim_sym", "risk.lim_strat")})
    d = Book()
    d.r.import_state(old)
    assert d.r.kyc_default() == KycState.VERIFIED
    accepted(d.order(1, BUY, 200, 4_400_000))


# -- over the protocol: admin listener, SDK, kill -9, replay --

def test_kyc_and_large_when_set_by_admin_then_enforced_over_protocol_across_restart_and_replay(server_factory):
    import asyncio
    import subprocess
    import sys

    from tests.server_proc import ROOT
    from tests.test_risk_server import HASH, RISK, Admin, connect, fund, journal_rows

    srv = server_factory(risk='kyc_default = "pending"\n' + RISK, admins={"ops": HASH},
                         symbol_extra='[symbols.limits]\nlarge_order_qty = "1.000"\nlarge_position_qty = "2.000"\n'
                         ).start()
    ad = Admin(srv)
    fund(ad, acct1="1000000", acct2="1000000")
    ad.ok("mark", symbol="BTCUSDT", price="50000.00")
    out = ad.ok("kyc", account="acct2", state="verified")
    assert out["events"] == [{"event": "kyc_state", "account": "acct2", "kyc": "verified", "own": True}]
    ad.ok("set_limit", scope="account", target="acct2", kind="large_reject", value="true")
    assert ad("kyc", account="acct2", state="sleepy")["ok"] is False

    async def orders():
        async with connect(srv, 1) as c1, connect(srv, 2) as c2:
            out = []
            for c, qty in ((c1, "0.100"), (c2, "1.500"), (c2, "1.000"), (c2, "1.000"), (c2, "0.100")):
                r = await c.place("BTCUSDT", "buy", qty, price="49000.00")
                out.append((r.kind, r.reason))
            return out
    want = [("rejected", "KYC_PENDING"), ("rejected", "LARGE_ORDER"), ("accepted", None), ("accepted", None),
            ("rejected", "LARGE_POSITION")]
    got = asyncio.run(orders())
    assert [(k, r or None) for k, r in got] == want
    assert ad.ok("portfolio", account="acct1")["portfolio"]["kyc"] == "pending"
    srv.kill9()
    srv.start()
    ad = Admin(srv)
    assert ad.ok("portfolio", account="acct2")["portfolio"]["kyc"] == "verified"
    got = asyncio.run(orders())
    assert [(k, r or None) for k, r in got][:2] == want[:2]
    assert all(r == ("rejected", "LARGE_POSITION") for r in got[2:])       # 2.000 open already
    ad.ok("kyc", account="acct1", state="blocked")
    ad.ok("kyc", account="default", state="verified")                         # acct1 keeps its own state
    ad.ok("kyc", account="acct2", state="clear")
    assert srv.terminate() == 0
    srv.start()                                                               # config re-applies its default
    ad = Admin(srv)
    assert [ad.ok("portfolio", account=a)["portfolio"]["kyc"] for a in ("acct1", "acct2", "acct3")] == \
        ["blocked", "pending", "pending"]
    kyc = [r for r in journal_rows(srv, "--event-type", "set_kyc") if r["record"] == "command"]
    assert [(r["account"], r["operator"]) for r in kyc] == [(0, 0), (2, 1), (1, 1), (0, 1), (2, 1), (0, 0)]
    replayed = subprocess.run([sys.executable, "-m", "engine.cli", "journal", "replay", str(srv.dir / "journal"),
                               "--config", str(srv.config)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr                          # the same decisions, event for event


def test_disposition_note_when_recorded_then_killed_9_then_shown_by_surveil_and_audit_and_journal_proves_text(
        server_factory, tmp_path):
    """A disposition's free-text note (engine/notes.py): the text beside the journal, its BLAKE2b digest in the
    journaled command; after kill -9 and recovery, `surveil alerts` and `report audit --dispositions` show it;
    a note whose text was edited afterwards no longer matches the journal and shows as not found."""
    import hashlib
    import json

    from engine.notes import NOTES
    from tests.test_reports import report
    from tests.test_risk_server import Admin, admin_cli
    from tests.test_surveillance_more import alerts, cli, large_orders

    srv, ad = large_orders(server_factory, 3)
    cli("surveil", srv.dir / "journal", "--config", srv.config, "--store", tmp_path / "s0")
    first, second, third = [a["id"] for a in alerts(tmp_path / "s0")]
    note1 = "Called the desk: hedge of a client's OTC trade, documents on file."
    out = ad.ok("disposition", alert=first, state="escalated", note=note1)
    digest1 = hashlib.blake2b(note1.encode(), digest_size=16).hexdigest()
    assert out["events"] == [{"event": "alert_disposition", "alert": first, "disposition": "escalated",
                              "note_digest": digest1}]
    note2 = "Market maker's quote refresh; no pattern."
    code, got = admin_cli(srv, "disposition", second, "dismissed", "--note", note2)
    assert code == 0 and got["ok"], got
    assert "printable" in ad("disposition", alert=first, state="reviewed", note="two\nlines")["error"]
    srv.kill9()
    srv.start()
    assert "recovered" in srv.output()
    Admin(srv).ok("disposition", alert=third, state="reviewed")                # no note
    srv.stop()

    store = tmp_path / "s1"
    cli("surveil", srv.dir / "journal", "--config", srv.config, "--store", store)
    got = {a["id"]: a for a in alerts(store)}
    assert [(d["disposition"], d["note"], d["note_digest"]) for d in got[first]["dispositions"]] == \
        [("escalated", note1, digest1)]
    assert got[second]["dispositions"][0]["note"] == note2
    assert (got[third]["dispositions"][0]["note"], got[third]["dispositions"][0]["note_digest"]) == (None, "")
    table = cli("surveil", "alerts", "--store", store).splitlines()[1:]
    assert table[0].endswith(f"escalated  ({note1})") and table[2].endswith("reviewed")
    trail = [json.loads(line) for line in cli("surveil", "alerts", "--store", store, "--dispositions").splitlines()]
    assert [d["note"] for d in trail] == [note1, note2, None]

    rows = report(srv, "audit", "--dispositions", "--format", "json")
    assert [(r["alert"], r["disposition"], r["operator_name"], r["note"], r["note_found"]) for r in rows] == [
        (first, "escalated", "ops", note1, True), (second, "dismissed", "ops", note2, True),
        (third, "reviewed", "ops", "", False)]
    assert rows[0]["note_digest"] == digest1 and rows[0]["seq"] < rows[1]["seq"] < rows[2]["seq"]
    import pyarrow.parquet as pq
    report(srv, "audit", "--dispositions", "--format", "parquet", "--out", tmp_path / "d.parquet")
    assert pq.read_table(tmp_path / "d.parquet").to_pylist() == rows

    path = srv.dir / "journal" / NOTES                  # edit the text after the fact: the journal disagrees
    path.write_text(path.read_text().replace("no pattern", "no problem"))
    rows = report(srv, "audit", "--dispositions", "--format", "json")
    assert [(r["note"], r["note_found"]) for r in rows[:2]] == [(note1, True), ("", False)]
    cli("surveil", srv.dir / "journal", "--config", srv.config, "--store", tmp_path / "s2")
    table = cli("surveil", "alerts", "--store", tmp_path / "s2").splitlines()[1:]
    assert table[1].endswith(f"dismissed  (note not found: {rows[1]['note_digest']})")
