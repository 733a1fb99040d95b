"""A client written from protocol/SPEC.md alone, against a real server.

Everything it knows about the wire comes from parsing SPEC.md: the schema version (the title),
the frame header, the message type table (numbers, bodies, frame sizes, which are sequenced),
each body's byte table, the enumerations and, from the session rules, how LOGON is signed.
It uses only `struct` and `hmac` (never protocol/ or clients/): if SPEC.md leaves something
out or gets it wrong, this client fails where a client in another language would."""
import hashlib
import hmac
import os
import re
import socket
import struct
import time

from tests.server_proc import ROOT, SECRETS

SPEC = (ROOT / "protocol" / "SPEC.md").read_text()
FORMATS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i32": "i", "i64": "q"}


def tables(text):
    """{heading: [row dicts]} for every markdown table, keyed by the nearest heading above it."""
    out, heading, rows, cols = {}, None, None, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cols is None:
                cols, rows = cells, []
            elif not set("".join(cells)) <= set("-:"):
                rows.append(dict(zip(cols, cells)))
            continue
        if cols is not None:
            out.setdefault(heading, rows)
            cols = None
    return out


class Spec:
    def __init__(self, text):
        self.version = int(re.search(r"^# .*schema version (\d+)$", text, re.M).group(1))
        t = tables(text)
        self.layouts, self.offsets = {}, {}
        for heading, rows in t.items():
            m = re.fullmatch(r"(\w+): (\d+) bytes", heading)
            if m:
                self.layouts[m.group(1)] = self._layout(rows, int(m.group(2)))
                self.offsets[m.group(1)] = {r["field"]: int(r["offset"]) for r in rows}
        self.docs = dict(re.findall(r"^### (\w+): \d+ bytes\n\n(.+?)\n\n\|", text, re.M | re.S))
        self.header = self._layout(t["Frame header"], None)
        self.types = {r["name"]: r for r in t["Message types"]}
        self.by_number = {int(r["type"]): r for r in t["Message types"]}
        self.enums = {h: {r["name"]: int(r["value"]) for r in rows} for h, rows in t.items()
                      if rows and set(rows[0]) == {"value", "name"}}
        rule = re.search(r"HMAC-SHA256 over bytes (\d+)\.\.(\d+) of the LOGON\s+frame", text)
        self.signed = slice(int(rule.group(1)), int(rule.group(2)) + 1)
        self.key_label = re.search(r'HMAC-SHA256\(key=secret, msg=b"([^"]+)"\)', text).group(1).encode()

    @staticmethod
    def _layout(rows, size):
        fmt, names, off = "<", [], 0
        for r in rows:
            assert int(r["offset"]) == off, f"{r['field']}: offset {r['offset']}, fields add up to {off}"
            typ = r["type"]
            fmt += FORMATS.get(typ) or f"{typ[1:]}s"
            names.append(r["field"])
            off += int(r["size"])
        st = struct.Struct(fmt)
        assert size is None or st.size == size
        return st, names

    def encode(self, name, **fields):
        row = self.types[name]
        st, names = self.layouts[row["body"]]
        body = st.pack(*(fields.pop(n, b"" if code.endswith("s") else 0) for n, code in zip(names, _codes(st.format))))
        assert not fields, f"not in {row['body']}: {fields}"
        hst, hnames = self.header
        head = hst.pack(*(dict(length=hst.size + len(body), msg_type=int(row["type"]),
                               version=self.version).get(n, 0) for n in hnames))
        assert len(head) + len(body) == int(row["frame bytes"])
        return head + body

    def decode(self, frame):
        """(type name, body dict, [entry dicts])"""
        hst, hnames = self.header
        h = dict(zip(hnames, hst.unpack_from(frame)))
        assert h["version"] == self.version and h["length"] == len(frame)
        row = self.by_number[h["msg_type"]]
        st, names = self.layouts[row["body"]]
        body = dict(zip(names, st.unpack_from(frame, hst.size)))
        entries = []
        m = re.fullmatch(r"(\d+) \+ count x (\d+)", row["frame bytes"])
        if m:          # the entry layout is the one whose description names this type as its entry
            fixed, size = int(m.group(1)), int(m.group(2))
            (est, enames), = [self.layouts[n] for n, doc in self.docs.items()
                              if f"{row['name']} ({row['type']}" in doc and "entry" in doc and n != row["body"]]
            assert est.size == size
            entries = [dict(zip(enames, est.unpack_from(frame, fixed + i * size))) for i in range(body["count"])]
            assert len(frame) == fixed + body["count"] * size
        else:
            assert len(frame) == int(row["frame bytes"])
        return row["name"], body, entries


class Conn:
    def __init__(self, spec, port):
        self.spec, self.sock, self.buf = spec, socket.create_connection(("127.0.0.1", port), timeout=5), b""

    def send(self, name, **fields):
        self.sock.sendall(self.spec.encode(name, **fields))

    def frame(self):
        """The next frame's bytes, or b"" when the server closed the connection."""
        hst, _ = self.spec.header
        while True:
            if len(self.buf) >= hst.size:
                length = hst.unpack_from(self.buf)[0]
                if len(self.buf) >= length:
                    f, self.buf = self.buf[:length], self.buf[length:]
                    return f
            data = self.sock.recv(65536)
            if not data:
                return b""
            self.buf += data

    def next(self):
        return self.spec.decode(self.frame())

    def logon(self, account, next_seq, heartbeat_ms=0):
        s = self.spec
        frame = bytearray(s.encode("LOGON", account=account, heartbeat_ms=heartbeat_ms, next_seq=next_seq,
                                   timestamp_ns=time.time_ns(), proto_version=s.version,
                                   nonce=int.from_bytes(os.urandom(4), "little")))
        key = hmac.new(SECRETS[account].encode(), s.key_label, hashlib.sha256).digest()
        hmac_at = s.header[0].size + s.offsets["Logon"]["hmac"]
        assert s.signed == slice(s.header[0].size, hmac_at)        # "bytes 8..39": the body before the hmac
        frame[hmac_at:] = hmac.new(key, bytes(frame[s.signed]), hashlib.sha256).digest()
        self.sock.sendall(frame)
        return self.next()


def _codes(fmt):
    return re.findall(r"\d*[A-Za-z]", fmt.lstrip("<"))


def test_spec_client_when_logging_on_placing_cancelling_then_reports_match_the_spec(server_factory):
    srv = server_factory(heartbeat_ms=1000).start()
    spec = Spec(SPEC)
    E = spec.enums
    sequenced = {name for name, r in spec.types.items() if r["sequenced"] == "yes"}
    assert {"ACCEPTED", "REJECTED", "FILL", "CANCELLED", "BALANCE", "ACCOUNT_STATE"} <= sequenced
    c = Conn(spec, srv.port)
    t, acc, _ = c.logon(1, next_seq=1, heartbeat_ms=0)
    assert t == "LOGON_ACCEPTED"
    assert (acc["next_seq"], acc["next_client_order_id"], acc["heartbeat_ms"]) == (1, 1, 1000)   # 0: the server's

    c.send("SYMBOL_DIRECTORY_REQUEST", request_id=5)
    t, head, entries = c.next()
    assert (t, head["request_id"], head["status"], head["more"]) == ("SYMBOL_DIRECTORY", 5, 0, 0)
    btc = next(e for e in entries if e["name"].rstrip(b"\0") == b"BTCUSDT")
    price, qty = 450 * btc["tick_size"], 3 * btc["lot_size"]

    before = time.time_ns()
    c.send("NEW_ORDER", client_order_id=1, symbol=btc["symbol"], side=E["Side"]["BUY"],
           order_type=E["OrderType"]["LIMIT"], tif=E["TimeInForce"]["GTC"], price=price, qty=qty)   # stp 0: default
    t, r, _ = c.next()
    assert t == "ACCEPTED" and t in sequenced
    assert (r["seq"], r["client_order_id"], r["symbol"], r["side"], r["price"], r["qty"], r["leaves"]) == \
        (1, 1, btc["symbol"], E["Side"]["BUY"], price, qty, qty)
    assert r["cmd_kind"] == E["CommandKind"]["NEW_ORDER"] and r["order_id"] > 0
    assert before <= r["ts_ns"] <= time.time_ns() and r["fee"] == 0 and r["liquidity"] == 0
    order_id = r["order_id"]

    c.send("NEW_ORDER", client_order_id=2, symbol=btc["symbol"], side=E["Side"]["SELL"],
           order_type=E["OrderType"]["LIMIT"], tif=9, price=price, qty=qty)
    t, r, _ = c.next()
    assert (t, r["seq"], r["reason"]) == ("REJECTED", 2, E["Reject"]["INVALID_TIF"])
    assert (r["order_id"], r["client_order_id"], r["side"], r["price"], r["qty"]) == \
        (0, 2, E["Side"]["SELL"], price, qty)                                  # echoed as sent

    c.send("CANCEL", order_id=order_id)
    t, r, _ = c.next()
    assert (t, r["seq"], r["order_id"], r["reason"], r["qty"], r["leaves"]) == \
        ("CANCELLED", 3, order_id, E["CancelReason"]["USER"], qty, 0)
    assert r["cmd_kind"] == E["CommandKind"]["CANCEL"]
    c.send("LOGOUT")
    t, r, _ = c.next()
    assert (t, r["reason"]) == ("LOGOUT", 0)                                    # the echo
    assert c.frame() == b""                                                    # then the close

    # log on without a replay: next_seq above the newest report
    quiet = Conn(spec, srv.port)
    t, acc, _ = quiet.logon(1, next_seq=2**64 - 1)
    assert (t, acc["next_seq"], acc["next_client_order_id"]) == ("LOGON_ACCEPTED", 4, 3)
    quiet.send("OPEN_ORDERS_REQUEST", request_id=6)
    t, head, entries = quiet.next()
    assert (t, head["request_id"], entries) == ("OPEN_ORDERS", 6, [])           # no report came first

    # a replay from seq 2: exactly the REJECTED and the CANCELLED, then live
    again = Conn(spec, srv.port)
    t, acc, _ = again.logon(1, next_seq=2)
    assert (t, acc["next_seq"]) == ("LOGON_ACCEPTED", 4)
    replayed = [again.next() for _ in range(2)]
    assert [(t, r["seq"]) for t, r, _ in replayed] == [("REJECTED", 2), ("CANCELLED", 3)]
    assert replayed[1][1]["ts_ns"] >= replayed[0][1]["ts_ns"] >= before
