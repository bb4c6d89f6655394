"""A directory of service tokens shared by a pod's processes.

Each gunicorn worker has its own :class:`~meshauth.client.ServiceClient` and so its own in-memory
token. A worker started while identity is down (recycled after ``max_requests``, or replacing a dead
one) would have none and fail every call, although its siblings hold a valid token. With a cache
directory the workers share it: one file per (client id, audience), written atomically with mode
0600. A file that cannot be read or parsed is ignored (the client fetches a token as before).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

__all__ = ["TokenCache"]

log = logging.getLogger("meshauth.client")


class TokenCache:
    """Tokens of ``client_id`` in ``directory`` (created with mode 0700 when missing)."""

    def __init__(self, directory: str | os.PathLike[str], client_id: str) -> None:
        self.directory = Path(directory)
        self.client_id = client_id
        self._warned: set[Path] = set()

    def path(self, audience: str) -> Path:
        """The file holding the token for ``audience`` (a hash: any audience makes a safe name)."""
        digest = hashlib.sha256(f"{self.client_id}\0{audience}".encode()).hexdigest()[:32]
        return self.directory / f"token-{digest}.json"

    def load(self, audience: str, margin: float) -> tuple[str, float] | None:
        """The cached token and its seconds left before ``margin`` ahead of expiry, or None."""
        path = self.path(audience)
        try:
            data = json.loads(path.read_text())
            token = data["access_token"]
            issued_at, expires_at = float(data["issued_at"]), float(data["expires_at"])
            if not isinstance(token, str) or not token:
                raise ValueError("no access_token")
            if data.get("client_id") != self.client_id or data.get("audience") != audience:
                raise ValueError("written for another client or audience")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._warn_once(path, f"ignoring the unreadable service token cache file {path}: {exc}")
            return None
        # The same margin as a fresh token: never hand out one that may expire before the callee checks.
        left = expires_at - min(margin, (expires_at - issued_at) / 2) - time.time()
        return (token, left) if left > 0 else None

    def save(self, audience: str, token: str, expires_in: float) -> None:
        """Store ``token`` for the other processes; a failure is logged, never raised."""
        now = time.time()
        payload = json.dumps(
            {
                "client_id": self.client_id,
                "audience": audience,
                "access_token": token,
                "issued_at": now,
                "expires_at": now + expires_in,
            }
        )
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file with mode 0600; after the rename a reader sees the old file or the new.
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".token-")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(payload)
                os.replace(tmp, self.path(audience))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            self._warn_once(
                self.directory, f"cannot write the service token cache in {self.directory}: {exc}"
            )

    def forget(self, audience: str) -> None:
        """Remove the file for ``audience`` (its token was refused: no process should pick it up)."""
        try:
            self.path(audience).unlink(missing_ok=True)
        except OSError as exc:
            self._warn_once(self.directory, f"cannot remove a service token cache file: {exc}")

    def _warn_once(self, key: Path, message: str) -> None:
        # A broken file or directory stays broken: one line per process, not one per call.
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)
