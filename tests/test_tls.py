"""TLS on the trading port: a self-signed certificate made here with the `openssl` CLI
(skipped, saying so, where it is missing); the SDK trades and subscribes over it, a
plain-TCP client is dropped without harm, handshakes above the configured rate are
refused before they start."""
import asyncio
import shutil
import socket
import ssl
import subprocess
from decimal import Decimal

import pytest

from clients import Client, TopOfBook
from tests.server_proc import SECRETS
from tests.test_ops import get, metric

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="TLS tests need the openssl command line tool to make a test certificate")


@pytest.fixture
def cert(tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    key.chmod(0o600)
    return crt, key


def tls_server(server_factory, cert, extra=""):
    crt, key = cert
    return server_factory(durability="none", server_extra=f'tls_cert = "{crt}"\ntls_key = "{key}"\n{extra}').start()


def client_context(crt):
    return ssl.create_default_context(cafile=str(crt))


def test_tls_when_configured_then_sdk_trades_and_subscribes_over_it(server_factory, cert):
    srv = tls_server(server_factory, cert)
    ctx = client_context(cert[0])

    async def go():
        async with Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1], tls=ctx) as a, \
                Client.connect("127.0.0.1", srv.port, account=2, secret=SECRETS[2], tls=ctx) as b:
            sub = await b.subscribe("BTCUSDT")
            assert isinstance(await sub.__anext__(), TopOfBook)
            r = await a.place("BTCUSDT", "sell", "1.000", price="100.00")
            assert r.kind == "accepted"
            fill = await b.place("BTCUSDT", "buy", "1.000", price="100.00")
            assert fill.kind == "accepted"
            async for rep in b.reports():
                if rep.kind == "fill":
                    assert rep.price == Decimal("100.00")
                    break
            return (await b.recent_trades("BTCUSDT", 5))[0].qty
    assert asyncio.run(go()) == Decimal("1.000")
    assert metric(get(srv, "/metrics")[1], "te_tls_handshakes_total") >= 2


def test_tls_when_client_speaks_plain_tcp_or_distrusts_cert_then_dropped_and_server_fine(server_factory, cert):
    srv = tls_server(server_factory, cert)

    async def plain():
        await Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1])
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(plain())

    async def untrusting():                    # the system CAs do not know a self-signed certificate
        await Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1], tls=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(untrusting())

    async def good():
        async with Client.connect("127.0.0.1", srv.port, account=1, secret=SECRETS[1],
                                  tls=client_context(cert[0])) as c:
            return (await c.place("AAPL", "buy", 1, price="10.00")).kind
    assert asyncio.run(good()) == "accepted"
    assert metric(get(srv, "/metrics")[1], "te_tls_failed_total") >= 1


def test_tls_when_handshakes_above_rate_then_refused_before_handshake(server_factory, cert):
    srv = tls_server(server_factory, cert, "tls_handshakes_per_s = 0.01\ntls_handshake_burst = 2")
    ctx = client_context(cert[0])
    outcomes = []
    for _ in range(4):
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                outcomes.append("handshake")
        except (ssl.SSLError, ConnectionError, OSError):
            outcomes.append("refused")
    assert outcomes == ["handshake", "handshake", "refused", "refused"]
    text = get(srv, "/metrics")[1]
    assert metric(text, "te_tls_refused_total") == 2 and metric(text, "te_tls_handshakes_total") == 2
    assert "refused before its handshake" in srv.output()
