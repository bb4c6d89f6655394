"""The sidecar's connection pool to its app: set up once, so that no request pays for it.

The app is gunicorn in the same pod, reached over a unix domain socket on a shared memory volume
(``MESHAUTH_SIDECAR_UPSTREAM=unix:/run/gunicorn/app.sock``) or over loopback TCP
(``http://127.0.0.1:8080``). Either way:

- connections are kept alive and reused (gunicorn's gthread workers keep them open for
  ``GUNICORN_KEEPALIVE`` seconds; sync workers would close every one after a single request);
- a host name is resolved once, at start: the app does not move while the pod lives, and a
  resolution per new connection costs a thread-pool round trip.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from meshauth.sidecar.config import SidecarConfig

__all__ = ["UNIX_HOST", "StaticResolver", "open_pool", "origin"]

#: The host name requests to a unix socket carry in aiohttp's URL (never sent: the client's own
#: ``Host`` header is forwarded).
UNIX_HOST = "localhost"
# Below gunicorn's keep-alive (GUNICORN_KEEPALIVE, 5 s by default), so the pool never picks a
# connection gunicorn is about to close.
KEEPALIVE_SECONDS = 4.0


def origin(config: SidecarConfig) -> URL:
    """Scheme, host and port every upstream request is built on (never a part of the request)."""
    if config.upstream_socket:
        return URL.build(scheme="http", host=UNIX_HOST)
    return URL(config.upstream)


class StaticResolver(AbstractResolver):
    """Answers with the addresses found at start, without any I/O."""

    def __init__(self, addresses: dict[str, list[ResolveResult]]) -> None:
        self._addresses = addresses

    @classmethod
    async def for_host(cls, host: str, port: int) -> StaticResolver:
        """Resolve ``host`` once (fails loudly now rather than on every request later)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC)
        results: list[ResolveResult] = [
            {
                "hostname": host,
                "host": str(address[0]),
                "port": int(address[1]),
                "family": family,
                "proto": proto,
                "flags": socket.AI_NUMERICHOST,
            }
            for family, _, proto, _, address in infos
        ]
        return cls({host: results})

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        try:
            return self._addresses[host]
        except KeyError:
            raise OSError(f"{host} is not the sidecar's upstream") from None

    async def close(self) -> None:
        return None


async def open_pool(config: SidecarConfig) -> aiohttp.BaseConnector:
    """The keep-alive pool to the app, sized by ``MESHAUTH_SIDECAR_UPSTREAM_CONNECTIONS``."""
    if config.upstream_socket:
        return aiohttp.UnixConnector(
            path=config.upstream_socket,
            limit=config.upstream_connections,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
    url = URL(config.upstream)
    host, port = url.raw_host or "", url.port or 80
    return aiohttp.TCPConnector(
        limit=config.upstream_connections,
        keepalive_timeout=KEEPALIVE_SECONDS,
        resolver=await StaticResolver.for_host(host, port),
        use_dns_cache=False,
    )
