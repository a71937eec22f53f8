"""Run localstripe's aiohttp app on 127.0.0.1 only, with no state on disk.

    python -m payments_pipeline_tests.fakes.localstripe_server --port 0

localstripe's own CLI binds `::` (every interface) and pickles its whole store to
/tmp/localstripe.pickle after every write, loading it back at start: two servers (two tests, two
sessions) would share state. Here both `Store.dump_to_disk` and `Store.try_load_from_disk` are
no-ops, the socket is bound to 127.0.0.1, and the port actually bound is printed on stdout as
`listening on <port>` (so `--port 0` lets the kernel pick one with no race).

The server stops by itself: when its parent process goes away (it polls the parent pid) or after
`--max-seconds` (a test that forgets it cannot leave it running for long).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

from aiohttp import web
from localstripe import resources
from localstripe.server import app


def _no_disk() -> None:
    def nothing(self: resources.Store) -> None:
        return None

    resources.Store.dump_to_disk = nothing  # type: ignore[method-assign]
    resources.Store.try_load_from_disk = nothing  # type: ignore[method-assign]


async def _watch(parent: int, max_seconds: float) -> None:
    """Exit when the parent is gone (re-parented) or `max_seconds` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    while os.getppid() == parent and loop.time() < deadline:
        await asyncio.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)  # run_app's handler: a graceful shutdown


async def _start_watch(application: web.Application) -> None:
    parent, max_seconds = application["pp_watch"]
    application["pp_watch_task"] = asyncio.create_task(_watch(parent, max_seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    _no_disk()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    app["pp_watch"] = (os.getppid(), args.max_seconds)
    app.on_startup.append(_start_watch)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
