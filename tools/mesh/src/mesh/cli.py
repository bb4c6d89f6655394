"""The `mesh` command: run the fleet locally and manage its database.

mesh up [--mode sidecar|inprocess] [--only NAME ...] [--pooler]
mesh restart SERVICE
mesh chaos [--clients N] [--window S] [--freeze S]
mesh db bootstrap | mesh db sql | mesh db url SERVICE | mesh db stop
mesh db budget [--scenario NAME] [--values SERVICE=FILE] [--server URL]
mesh db lint-migrations [--only NAME ...]
mesh generate [--check]
mesh new-service NAME [--port N] [--reads SERVICE ...]
mesh images [--only NAME ...] [--no-cache]
mesh pods [--mode sidecar|inprocess] [--port-offset N]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from mesh import dbchecks
from mesh.bootstrap import bootstrap, local_passwords, psql_script, service_url
from mesh.control import ControlServer, send
from mesh.fleet import Fleet, PortInUse
from mesh.journey import JOURNEY
from mesh.local import LOCAL_DATABASE, admin_url, embedded_postgres, run_dir
from mesh.registry import find_root, load_registry
from mesh.supervisor import GaveUp, Supervisor
from mesh.tooling import ensure_haproxy
from mesh.watchdog import guard_postgres
from meshcontract import READYZ, SIDECAR_ENGINES

__all__ = ["main"]


_stdout_gone = False


def _write(text: str) -> None:
    """Print; a closed stdout (`make up | head`, a pipe whose reader died) must not stop the run."""
    global _stdout_gone
    if _stdout_gone:
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        _stdout_gone = True
        # Later writes (and the interpreter's last flush) go nowhere instead of failing again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def _say(message: str) -> None:
    _write(f"[mesh] {message}\n")


class _Stopped(BaseException):
    """A stop signal arrived while the mesh was still starting."""


def _lock_run_dir(directory: Path) -> tuple[int | None, str]:
    """Hold ``directory``'s lock for this run; returns the lock's fd, or None and the holder's pid."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "mesh.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd, ""


def cmd_up(args: argparse.Namespace) -> int:
    registry = load_registry(find_root())
    unknown = set(args.only) - set(registry.services)
    if unknown:
        _say(f"unknown service(s): {', '.join(sorted(unknown))}")
        return 2
    if args.mode == "sidecar" and args.sidecar_engine == "haproxy" and ensure_haproxy() is None:
        _say("--sidecar-engine haproxy needs HAProxy: apt-get install haproxy")
        return 2
    run = run_dir(registry.root, args.port_offset)
    lock, holder = _lock_run_dir(run)
    if lock is None:
        _say(
            f"a mesh is already running from {run} (pid {holder}): stop it first "
            "(Ctrl-C in its terminal), or run another beside it with --port-offset N"
        )
        return 1
    fleet = Fleet(
        registry=registry,
        admin_url="",
        database=args.database,
        run_dir=run,
        mode=args.mode,
        workers=args.workers,
        only=tuple(args.only),
        port_offset=args.port_offset,
        pooler=args.pooler,
        sidecar_engine=args.sidecar_engine,
    )
    try:
        fleet.listen()
    except PortInUse as exc:
        _say(f"{exc}: another mesh or program listens there; stop it, or use --port-offset N")
        os.close(lock)
        return 1

    starting = True
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if starting:
            raise _Stopped

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started_db = False
    watchdog: subprocess.Popen[bytes] | None = None
    control: ControlServer | None = None
    supervisor = Supervisor(fleet, say=_say)
    return_code = 0
    try:
        _say("starting PostgreSQL (embedded, data in .mesh/postgres)")
        fleet.admin_url, started_db = admin_url(registry.root)
        if fleet.pgbouncer is not None:
            fleet.pgbouncer.admin_url = fleet.admin_url
        if started_db and not args.keep_db:
            watchdog = guard_postgres(embedded_postgres(registry.root).home, run / "watchdog.log")
        fleet.up(progress=_say, seed=True)
        supervisor = Supervisor(fleet, say=_say)
        control = ControlServer(run / "control.sock")
        _print_table(fleet)
        _say("press Ctrl-C to stop; `mesh restart SERVICE` replaces a service with no request lost")
        starting = False
        while not stop.is_set():
            supervisor.tick()
            for request in control.pending():
                request.reply(_control(supervisor, request.words))
            pooler = fleet.pgbouncer.process if fleet.pgbouncer else None
            if pooler is not None and not pooler.alive():
                # Not restarted (yet): every service's connections go through it.
                _say(f"pgbouncer exited; last lines of {pooler.log_path}:\n{pooler.tail()}")
                return_code = 1
                stop.set()
            stop.wait(0.5)
    except _Stopped:
        pass
    except GaveUp as exc:
        _say(str(exc))
        return_code = 1
    except Exception as exc:  # report and clean up whatever failed
        _say(f"failed: {exc}")
        return_code = 1
    finally:
        starting = False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            # A second Ctrl-C must not interrupt the cleanup half-way.
            signal.signal(signum, signal.SIG_IGN)
        if control is not None:
            control.close()
        _say("stopping services")
        supervisor.stop()
        # Stop the server only if this run started it: another run (or a test session) may own it.
        if started_db and not args.keep_db:
            _say("stopping PostgreSQL")
            embedded_postgres(registry.root).stop()
        if watchdog is not None and watchdog.stdin is not None:
            watchdog.stdin.close()
            watchdog.wait(30)
        _say("stopped")
        os.close(lock)
    return return_code


def _control(supervisor: Supervisor, words: list[str]) -> str:
    """Carry out one control request on the supervisor's thread; the answer is one line."""
    if len(words) != 2 or words[0] != "restart":
        return "error: expected `restart SERVICE`"
    name = words[1]
    if name not in supervisor.fleet.processes:
        return f"error: no service {name!r} in this mesh ({', '.join(supervisor.fleet.processes)})"
    _say(f"{name}: replacing (new processes first, then the old ones drain and stop)")
    try:
        seconds = supervisor.replace(name)
    except Exception as exc:  # the old processes keep serving; say why
        _say(f"{name}: replacement failed: {exc}")
        return f"error: {exc}"
    _say(f"{name}: replaced in {seconds:.1f} s")
    return f"ok: {name} replaced in {seconds:.1f} s"


def cmd_restart(args: argparse.Namespace) -> int:
    registry = load_registry(find_root())
    path = run_dir(registry.root, args.port_offset) / "control.sock"
    if args.service not in registry.services:
        _say(f"unknown service: {args.service}")
        return 2
    try:
        answer = send(path, f"restart {args.service}")
    except (FileNotFoundError, ConnectionRefusedError):
        _say(f"no mesh is running from {path.parent}; start one with `make up`")
        return 1
    _say(answer)
    return 0 if answer.startswith("ok") else 1


def _print_table(fleet: Fleet) -> None:
    rows = [("service", "url", "health", "api docs")]
    for service in fleet.services:
        base = fleet.url(service.name)
        rows.append((service.name, base, f"{base}{READYZ}", f"{base}/api/v1/docs"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [""]
    for index, row in enumerate(rows):
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  " + "  ".join("-" * width for width in widths))
    lines.append("")
    if {"identity", "catalog", "orders"} <= set(fleet.ports):
        lines.append(
            JOURNEY.format(
                identity=fleet.url("identity"), catalog=fleet.url("catalog"), orders=fleet.url("orders")
            )
        )
    _write("\n".join(lines) + "\n")


def cmd_db(args: argparse.Namespace) -> int:
    if args.db_command in dbchecks.COMMANDS:
        return dbchecks.run(args)
    registry = load_registry(find_root())
    if args.db_command == "sql":
        sys.stdout.write(psql_script(registry))
        return 0
    if args.db_command == "stop":
        embedded_postgres(registry.root).stop()
        return 0
    url, _ = admin_url(registry.root)
    if args.db_command == "bootstrap":
        started = time.monotonic()
        bootstrap(url, args.database, registry, local_passwords(registry))
        _say(
            f"bootstrapped {args.database}: {', '.join(s.schema for s in registry)} "
            f"in {time.monotonic() - started:.2f} s"
        )
    elif args.db_command == "url":
        service = registry[args.service]
        print(service_url(url, args.database, service.role))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from mesh.testrun import run_suites

    return run_suites(load_registry(find_root()), args.pytest_args)


def cmd_bench(args: argparse.Namespace) -> int:
    from mesh.bench import run_bench

    return run_bench(
        load_registry(find_root()),
        seconds=args.seconds,
        rounds=args.rounds,
        connections=args.connections,
        json_path=args.json,
        upstream=args.upstream,
        reference=not args.no_reference,
    )


def cmd_chaos(args: argparse.Namespace) -> int:
    from mesh.chaos import ChaosConfig, format_report, run_chaos

    config = ChaosConfig(clients=args.clients, window=args.window, freeze=args.freeze)
    report = run_chaos(load_registry(find_root()), config, say=_say)
    _write("\n" + format_report(report) + "\n")
    return 0 if report.ok else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from mesh.generate import GenerateError, stale_files, write_files

    root = find_root()
    try:
        if args.check:
            stale = stale_files(root)
            for found in stale:
                _say(f"generate: {found}")
            return 1 if stale else 0
        for path in write_files(root):
            _say(f"generate: {'wrote' if (root / path).exists() else 'deleted'} {path}")
    except (GenerateError, ValueError, KeyError, OSError) as exc:
        _say(f"generate: {exc}")
        return 2
    return 0


def cmd_new_service(args: argparse.Namespace) -> int:
    from mesh.scaffold import ConcurrentEdit, PlanError, UsageError, new_service

    root = find_root()
    try:
        written = new_service(root, args.name, port=args.port, reads=args.reads)
    except UsageError as exc:
        # Refused before anything was computed or written.
        _say(f"new-service: {exc}")
        return 2
    except (PlanError, ConcurrentEdit, OSError) as exc:
        _say(f"new-service: {exc}; nothing was changed")
        return 1
    for path in written:
        print(f"  {path}")
    service = load_registry(root)[args.name]
    _say(
        f"created {args.name} (port {service.port}, {len(written)} files); install it with "
        "`make sync` (uv sync --all-packages), then `make test` and `make up`"
    )
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from mesh.containers import images_command

    return images_command(load_registry(find_root()), only=args.only, no_cache=args.no_cache)


def cmd_pods(args: argparse.Namespace) -> int:
    from mesh.containers import pods_command

    return pods_command(load_registry(find_root()), args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every service locally behind its auth sidecar")
    up.add_argument("--mode", choices=("sidecar", "inprocess"), default="sidecar")
    up.add_argument(
        "--sidecar-engine",
        choices=SIDECAR_ENGINES,
        default=SIDECAR_ENGINES[0],
        help="what serves each sidecar's port: python, or haproxy (installed from Debian when missing)",
    )
    up.add_argument("--workers", type=int, default=2, help="gunicorn workers per service")
    up.add_argument("--only", nargs="*", default=[], metavar="NAME", help="start only these services")
    up.add_argument("--keep-db", action="store_true", help="leave PostgreSQL running on exit")
    up.add_argument("--database", default=LOCAL_DATABASE, help="database name (default: mesh)")
    up.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="add this to every port, to run a second mesh beside one",
    )
    up.add_argument(
        "--pooler",
        action="store_true",
        help="put PgBouncer (transaction pooling) between every service and PostgreSQL",
    )
    up.set_defaults(func=cmd_up)

    restart = sub.add_parser(
        "restart", help="replace a service of the running `mesh up` with no request lost"
    )
    restart.add_argument("service")
    restart.add_argument("--port-offset", type=int, default=0, help="the mesh's --port-offset")
    restart.set_defaults(func=cmd_restart)

    test = sub.add_parser("test", help="run every test suite, each in its own pytest process")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to every pytest run")
    test.set_defaults(func=cmd_test)

    bench = sub.add_parser(
        "bench",
        help="auth cost side by side: baseline, in-process, sidecar, introspection, nginx as a reference",
    )
    bench.add_argument(
        "--seconds",
        type=int,
        default=5,
        help="seconds per mode and round, in 1 s slices taking turns with the other modes (default 5)",
    )
    bench.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds; median and min-max reported (default 5)"
    )
    bench.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    bench.add_argument(
        "--upstream",
        choices=("unix", "tcp"),
        default="unix",
        help="how the sidecars reach gunicorn: a unix socket (default, as deployed) or loopback TCP",
    )
    bench.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the reference modes (the in-process app behind nginx, installed from Debian when missing)",
    )
    bench.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every figure to FILE")
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser(
        "chaos", help="a mesh of its own under load while faults are injected; prints what clients saw"
    )
    chaos.add_argument("--clients", type=int, default=16, help="concurrent clients placing orders")
    chaos.add_argument("--window", type=float, default=20.0, help="seconds of load after each fault")
    chaos.add_argument(
        "--freeze", type=float, default=30.0, help="seconds identity's app (its gunicorn) stays frozen"
    )
    chaos.set_defaults(func=cmd_chaos)

    generate = sub.add_parser(
        "generate", help="write every per-service file (charts, workflows, skaffold, k8s) from mesh.toml"
    )
    generate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming each file that is not current"
    )
    generate.set_defaults(func=cmd_generate)

    new = sub.add_parser(
        "new-service",
        help="create a service wired into everything: code, chart, workflow, skaffold, registry",
    )
    new.add_argument("name", help="lowercase letters and digits, starting with a letter (e.g. payments)")
    new.add_argument("--port", type=int, default=None, help="local port (default: the next free one)")
    new.add_argument(
        "--reads",
        action="append",
        default=[],
        metavar="SERVICE",
        help="a service whose schema it may read (repeat, or separate with commas)",
    )
    new.set_defaults(func=cmd_new_service)

    images = sub.add_parser("images", help="build every image with podman (stand-ins for unreachable bases)")
    images.add_argument("--only", nargs="*", default=[], metavar="NAME", help="build only these images")
    images.add_argument("--no-cache", action="store_true", help="rebuild every layer (a cold build)")
    images.set_defaults(func=cmd_images)

    pods = sub.add_parser("pods", help="run the charts' pods from the images under podman kube play")
    pods.add_argument("--mode", choices=("sidecar", "inprocess"), default="sidecar")
    pods.add_argument(
        "--sidecar-engine",
        choices=SIDECAR_ENGINES,
        default=SIDECAR_ENGINES[0],
        help="what serves the sidecar's port (the charts' auth.sidecar.engine; default: python)",
    )
    pods.add_argument("--port-offset", type=int, default=0, help="add this to every port")
    pods.add_argument("--database", default="mesh_pods", help="database name (default: mesh_pods)")
    pods.add_argument("--keep-db", action="store_true", help="leave PostgreSQL running on exit")
    pods.add_argument("--no-build", action="store_true", help="use the images as they are")
    pods.add_argument("--state-dir", default=None, help="its PostgreSQL's data (default: .mesh/pods)")
    pods.add_argument("--explain", action="store_true", help="list what differs from helm install, and why")
    pods.set_defaults(func=cmd_pods)

    db = sub.add_parser("db", help="the local database")
    db.add_argument("--database", default=LOCAL_DATABASE)
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("bootstrap", help="create schemas, roles and read grants from mesh.toml")
    db_sub.add_parser("sql", help="print the bootstrap as SQL (what the cluster Job runs)")
    db_sub.add_parser("stop", help="stop the embedded PostgreSQL")
    dbchecks.add_parsers(db_sub)
    url = db_sub.add_parser("url", help="print a service's DATABASE_URL")
    url.add_argument("service")
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
