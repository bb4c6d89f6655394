"""``meshauth-sidecar``: run the sidecar until SIGTERM, then drain in-flight requests and exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

import uvloop
from aiohttp import web

from meshauth.settings import inherited_fd
from meshauth.sidecar.config import ConfigError, SidecarConfig
from meshauth.sidecar.logging import ACCESS_LINES, configure_logging
from meshauth.sidecar.proxy import Sidecar, create_metrics_server, create_server

__all__ = ["main", "serve"]

log = logging.getLogger("meshauth.sidecar")

# How long a stopping sidecar keeps answering on open connections (with Connection: close).
DRAIN_SECONDS = 6.0


def _site(runner: web.BaseRunner, listen: tuple[str, int], backlog: int = 128) -> web.BaseSite:
    fd = inherited_fd(listen)
    if fd is not None:
        # A socket its supervisor keeps open across restarts: connections queue instead of being
        # refused while no sidecar runs, and a replacement takes over with none lost.
        return web.SockSite(runner, socket.socket(fileno=fd))
    return web.TCPSite(runner, *listen, backlog=backlog)


async def serve(config: SidecarConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT set it when not given)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sidecar = Sidecar(config)
    await sidecar.start()
    server = create_server(sidecar)
    runner = web.ServerRunner(server, shutdown_timeout=config.shutdown_timeout)
    await runner.setup()
    site = _site(runner, config.listen, backlog=1024)
    await site.start()
    metrics_runner = web.ServerRunner(create_metrics_server(sidecar), shutdown_timeout=1)
    await metrics_runner.setup()
    metrics_site = _site(metrics_runner, config.metrics_listen)
    await metrics_site.start()
    log.info("listening on %s (metrics on %s), upstream %s", site.name, metrics_site.name, config.upstream)
    await stop.wait()
    log.info("stopping: no new connections, draining in-flight requests")
    # Close the listening socket (a replacement on the same socket takes the new connections),
    # then keep serving open connections for a while, answering with Connection: close: a client
    # that reuses a keep-alive connection at the moment it is closed sees an error, so connections
    # are closed after an answer, or once idle longer than clients keep them (httpx: 5 s).
    # Metrics are scraped until the end.
    sidecar.draining = True
    await site.stop()
    deadline = loop.time() + min(DRAIN_SECONDS, config.shutdown_timeout)
    while server.connections and loop.time() < deadline:
        await asyncio.sleep(0.1)
    # cleanup() waits (up to shutdown_timeout) for the requests still being served, then closes
    # whatever idle connection is left.
    await runner.cleanup()
    await metrics_runner.cleanup()
    await sidecar.close()
    ACCESS_LINES.flush()
    log.info("stopped")


def main() -> None:
    """Console entry point."""
    configure_logging()
    try:
        config = SidecarConfig.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    # uvloop's event loop (libuv) roughly halves the proxy's per-request overhead; the sidecar runs
    # beside every app container, so its CPU is the mesh's tax on every request.
    uvloop.run(serve(config))


if __name__ == "__main__":
    main()
