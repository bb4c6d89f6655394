"""``python -m mesh.watchdog HOME``: stop the embedded PostgreSQL when `mesh up` ends, however it ends.

PostgreSQL daemonizes (``pg_ctl start``), so it is no child of `mesh up` and a parent-death signal
cannot reach it; and it must be stopped cleanly (``pg_ctl stop``), not killed. `mesh up` starts this
process with a pipe on its stdin and never writes to it: the pipe reads end-of-file when `mesh up`
exits, crashes or is killed with SIGKILL, and then the server is stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mesh.postgres import EmbeddedPostgres

__all__ = ["guard_postgres"]


def guard_postgres(home: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog of the server in ``home``; close its stdin once that server is stopped."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        return subprocess.Popen(  # noqa: S603 - this module, no shell
            [sys.executable, "-m", "mesh.watchdog", str(home)],
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's signals are for its parent, not for it
        )


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mesh.watchdog HOME", file=sys.stderr)
        return 2
    # The terminal's Ctrl-C or hang-up is for `mesh up`, which then closes the pipe.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass
    server = EmbeddedPostgres(Path(argv[0]))
    if server.running_port() is not None:
        print(f"mesh up is gone; stopping PostgreSQL in {server.data_dir}", flush=True)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
