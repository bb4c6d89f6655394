"""The `mesh` command: run the fleet locally and manage its database.

mesh up [--mode sidecar|inprocess] [--only NAME ...] [--pooler]
mesh db bootstrap | mesh db sql | mesh db url SERVICE | mesh db stop
mesh db budget [--scenario NAME] [--values SERVICE=FILE] [--server URL]
mesh db lint-migrations [--only NAME ...]
mesh new-service NAME [--port N] [--reads SERVICE ...]
mesh images [--only NAME ...] [--no-cache]
mesh pods [--mode sidecar|inprocess] [--port-offset N]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from mesh import dbchecks
from mesh.bootstrap import bootstrap, local_passwords, psql_script, service_url
from mesh.fleet import Fleet
from mesh.local import LOCAL_DATABASE, admin_url, embedded_postgres, state_dir
from mesh.registry import find_root, load_registry

__all__ = ["main"]


def _say(message: str) -> None:
    print(f"[mesh] {message}", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    registry = load_registry(find_root())
    unknown = set(args.only) - set(registry.services)
    if unknown:
        _say(f"unknown service(s): {', '.join(sorted(unknown))}")
        return 2
    _say("starting PostgreSQL (embedded, data in .mesh/postgres)")
    url, started_db = admin_url(registry.root)
    fleet = Fleet(
        registry=registry,
        admin_url=url,
        database=args.database,
        run_dir=state_dir(registry.root) / "run",
        mode=args.mode,
        workers=args.workers,
        only=tuple(args.only),
        port_offset=args.port_offset,
        pooler=args.pooler,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        fleet.up(progress=_say, seed=True)
        _print_table(fleet)
        _say("press Ctrl-C to stop")
        while not stop.is_set():
            for procs in fleet.processes.values():
                for proc in procs:
                    if not proc.alive():
                        _say(f"{proc.name} exited; last lines of {proc.log_path}:\n{proc.tail()}")
                        stop.set()
            pooler = fleet.pgbouncer.process if fleet.pgbouncer else None
            if pooler is not None and not pooler.alive():
                _say(f"pgbouncer exited; last lines of {pooler.log_path}:\n{pooler.tail()}")
                stop.set()
            stop.wait(1.0)
    except Exception as exc:  # report and clean up whatever failed
        _say(f"failed: {exc}")
        return_code = 1
    else:
        return_code = 0
    finally:
        _say("stopping services")
        fleet.stop()
        # Stop the server only if this run started it: another run (or a test session) may own it.
        if started_db and not args.keep_db:
            _say("stopping PostgreSQL")
            embedded_postgres(registry.root).stop()
        _say("stopped")
    return return_code


def _print_table(fleet: Fleet) -> None:
    rows = [("service", "url", "health", "api docs")]
    for service in fleet.services:
        base = fleet.url(service.name)
        rows.append((service.name, base, f"{base}/readyz", f"{base}/api/v1/docs"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))
    print(flush=True)
    if {"identity", "catalog", "orders"} <= set(fleet.ports):
        print(
            _JOURNEY.format(
                identity=fleet.url("identity"), catalog=fleet.url("catalog"), orders=fleet.url("orders")
            )
        )


_JOURNEY = """  Try it:
    curl -s -X POST {identity}/api/v1/auth/signup -H 'Content-Type: application/json' \\
         -d '{{"email": "ada@example.com", "password": "correct horse battery"}}'
    TOKEN=$(curl -s -X POST {identity}/api/v1/auth/token -H 'Content-Type: application/json' \\
         -d '{{"email": "ada@example.com", "password": "correct horse battery"}}' \\
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    curl -s {catalog}/api/v1/products
    curl -s -X POST {orders}/api/v1/orders -H "Authorization: Bearer $TOKEN" \\
         -H 'Idempotency-Key: first-order' -H 'Content-Type: application/json' \\
         -d '{{"items": [{{"sku": "MUG-001", "qty": 2}}]}}'
    curl -s {orders}/api/v1/orders -H "Authorization: Bearer $TOKEN"
"""


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
    )


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

    test = sub.add_parser("test", help="run every test suite, each in its own pytest process")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to every pytest run")
    test.set_defaults(func=cmd_test)

    bench = sub.add_parser(
        "bench", help="auth cost side by side: baseline, in-process, sidecar, introspection"
    )
    bench.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    bench.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds; median and min-max reported (default 5)"
    )
    bench.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    bench.add_argument(
        "--upstream",
        choices=("tcp", "unix"),
        default="tcp",
        help="how orders' sidecar reaches gunicorn: loopback TCP (default, as deployed) or a unix socket",
    )
    bench.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every figure to FILE")
    bench.set_defaults(func=cmd_bench)

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
