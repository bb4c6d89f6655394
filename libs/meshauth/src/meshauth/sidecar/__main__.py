"""``meshauth-sidecar``: run the sidecar until SIGTERM, then drain in-flight requests and exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

import uvloop

from meshauth.settings import inherited_fd
from meshauth.sidecar.config import ConfigError, SidecarConfig
from meshauth.sidecar.haproxy import DataPlane
from meshauth.sidecar.logging import ACCESS_LINES, configure_logging
from meshauth.sidecar.protocol import HttpServer
from meshauth.sidecar.proxy import Sidecar, create_metrics_server, create_server

__all__ = ["main", "serve"]

log = logging.getLogger("meshauth.sidecar")

# How long a stopping sidecar keeps answering on open connections (with Connection: close).
DRAIN_SECONDS = 6.0


async def _listen(server: HttpServer, listen: tuple[str, int], backlog: int = 128) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    fd = inherited_fd(listen)
    if fd is not None:
        # A socket its supervisor keeps open across restarts: connections queue instead of being
        # refused while no sidecar runs, and a replacement takes over with none lost.
        return await loop.create_server(server, sock=socket.socket(fileno=fd), backlog=backlog)
    return await loop.create_server(server, *listen, backlog=backlog, reuse_address=True)


def _name(listener: asyncio.Server) -> str:
    host, port = listener.sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"


async def serve(config: SidecarConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT set it when not given)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sidecar = Sidecar(config)
    await sidecar.start()
    if config.engine == "haproxy":
        await _serve_with_haproxy(sidecar, stop)
        return
    server = create_server(sidecar)
    listener = await _listen(server, config.listen, backlog=1024)
    metrics_server = create_metrics_server(sidecar)
    metrics_listener = await _listen(metrics_server, config.metrics_listen)
    names = _name(listener), _name(metrics_listener)
    log.info("listening on %s (metrics on %s), upstream %s", *names, config.upstream)
    await stop.wait()
    log.info("stopping: no new connections, draining in-flight requests")
    # Close the listening socket (a replacement on the same socket takes the new connections),
    # then keep serving open connections for a while, answering with Connection: close: a client
    # that reuses a keep-alive connection at the moment it is closed sees an error, so connections
    # are closed after an answer, or once idle longer than clients keep them (httpx: 5 s).
    # Metrics are scraped until the end.
    server.draining = True
    listener.close()
    deadline = loop.time() + min(DRAIN_SECONDS, config.shutdown_timeout)
    while server.connections and loop.time() < deadline:
        await asyncio.sleep(0.1)
    # Then wait (up to shutdown_timeout) for the requests still being answered, and close whatever
    # idle connection is left.
    await server.shutdown(config.shutdown_timeout)
    metrics_listener.close()
    await metrics_server.shutdown(1)
    await sidecar.close()
    ACCESS_LINES.flush()
    log.info("stopped")


async def _serve_with_haproxy(sidecar: Sidecar, stop: asyncio.Event) -> None:
    # HAProxy serves the port (meshauth.sidecar.haproxy); this process keeps identity's keys fresh,
    # rewrites HAProxy's configuration when they change, and serves the metrics listener.
    config = sidecar.config
    data_plane = DataPlane(config, sidecar.verifier.jwks, sidecar.metrics)
    try:
        await data_plane.start()
    except BaseException:
        await data_plane.stop(0)
        await sidecar.close()
        raise
    metrics_server = create_metrics_server(sidecar)
    metrics_listener = await _listen(metrics_server, config.metrics_listen)
    log.info(
        "HAProxy on %s (metrics on %s), upstream %s",
        data_plane.bind,
        _name(metrics_listener),
        config.upstream,
    )
    await stop.wait()
    log.info("stopping: HAProxy finishes the requests in flight")
    await data_plane.stop(config.shutdown_timeout)
    metrics_listener.close()
    await metrics_server.shutdown(1)
    await sidecar.close()
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
