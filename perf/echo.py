"""The same-run floor for the round trip: a uvloop server that writes every byte it reads
straight back (one write per read), pinned like the real server. Python at both ends,
the same loopback, no engine: what a round trip costs before any of our work.

    python -m perf.echo --port-file PATH [--cpu N]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket


class Echo(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(1 << 18)
        self.view = memoryview(self.buf)

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(self.buf[:nbytes])


async def serve(port_file):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    gc.freeze()
    await asyncio.Event().wait()


def main(argv=None):
    import uvloop
    p = argparse.ArgumentParser(prog="python -m perf.echo")
    p.add_argument("--port-file", required=True)
    p.add_argument("--cpu", type=int, default=None)
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.port_file))


if __name__ == "__main__":
    main()
