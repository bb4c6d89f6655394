"""``meshauth-sidecar``: run the sidecar until SIGTERM, then drain in-flight requests and exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from meshauth.sidecar.config import ConfigError, SidecarConfig
from meshauth.sidecar.logging import ACCESS_LINES, configure_logging
from meshauth.sidecar.proxy import Sidecar, create_metrics_server, create_server

__all__ = ["main", "serve"]

log = logging.getLogger("meshauth.sidecar")


async def serve(config: SidecarConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT set it when not given)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sidecar = Sidecar(config)
    await sidecar.start()
    runner = web.ServerRunner(create_server(sidecar), shutdown_timeout=config.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, backlog=1024)
    await site.start()
    metrics_runner = web.ServerRunner(create_metrics_server(sidecar), shutdown_timeout=1)
    await metrics_runner.setup()
    await web.TCPSite(metrics_runner, config.metrics_host, config.metrics_port).start()
    log.info(
        "listening on %s:%s (metrics on %s:%s), upstream %s",
        config.listen_host,
        config.listen_port,
        config.metrics_host,
        config.metrics_port,
        config.upstream,
    )
    await stop.wait()
    log.info("stopping: no new connections, draining in-flight requests")
    # cleanup() closes the listening socket first, then waits (up to shutdown_timeout) for the
    # requests being served; idle keep-alive connections are closed. Metrics are scraped until then.
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
