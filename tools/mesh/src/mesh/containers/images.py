"""`mesh images`: build every deployable image with podman, from the Dockerfile as a registry builds them.

The repository's one Dockerfile builds every image: the ``service`` target once per service of
``mesh.toml`` (``--build-arg SERVICE=<name>``), the ``sidecar`` target for meshauth. It pins its base
images (``python:<version>-slim-bookworm``, ``ghcr.io/astral-sh/uv:<version>``) and the k8s/
bootstrap Job pins ``postgres:<version>-bookworm``. Where one cannot be pulled (no registry
is reachable), a stand-in is built under the very same name, so the Dockerfile stays unchanged:

- Debian bookworm itself comes from ``debootstrap --variant=minbase`` against the machine's configured
  Debian mirror, with the machine's CA certificates trusted (a TLS-intercepting proxy's CA included);
- Python 3.11 and psql are Debian's packages on that root (``containers/stand-ins/*.Containerfile``);
- uv is the binary from the pinned release's wheel on PyPI (checked against PyPI's sha256).

Every stand-in carries the label ``io.django-mesh.stand-in`` saying what it replaces.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from mesh.containers.podman import Podman, PodmanError
from mesh.registry import Registry

__all__ = [
    "DOCKERFILE",
    "BuiltImage",
    "ImageSpec",
    "build_images",
    "image_specs",
    "job_bases",
    "pinned_bases",
]

TAG = "dev"
NAMESPACE = "django-mesh"
MINBASE = f"localhost/{NAMESPACE}/debian:bookworm-minbase"
STAND_IN_LABEL = "io.django-mesh.stand-in"
# The machine's own CA certificates (Debian's update-ca-certificates inputs).
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PULL_TIMEOUT = 30.0
# The k8s/ bootstrap Job `mesh pods` plays: its image is a base to make like the Dockerfile's bases.
BOOTSTRAP = Path("k8s") / "db-bootstrap" / "bootstrap.yaml"

Progress = Callable[[str], None]


# Every image's Dockerfile, relative to the repository root (the build context).
DOCKERFILE = Path("Dockerfile")


@dataclass(frozen=True)
class ImageSpec:
    """One deployable image: its short name, its target of the Dockerfile and that target's arguments."""

    name: str
    target: str
    build_args: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        return f"{NAMESPACE}/{self.name}:{TAG}"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    seconds: float
    size: int


def image_specs(registry: Registry) -> list[ImageSpec]:
    """Every service's image, then the meshauth sidecar's."""
    specs = [ImageSpec(s.name, "service", (("SERVICE", s.name),)) for s in registry]
    specs.append(ImageSpec("meshauth", "sidecar"))
    return specs


def pinned_bases(root: Path) -> list[str]:
    """The external images the Dockerfile starts from (stage names excluded), in first-use order."""
    found: list[str] = []
    stages: set[str] = set()
    for line in (root / DOCKERFILE).read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if not match:
            continue
        image, stage = match.group(1), match.group(2)
        if image not in stages and image != "scratch" and image not in found:
            found.append(image)
        if stage:
            stages.add(stage)
    return found


def canonical(image: str) -> str:
    """The fully qualified name podman gives a short one (``python:x`` → ``docker.io/library/python:x``)."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


# -- stand-ins ------------------------------------------------------------------------------------


def _mirror() -> tuple[str, list[str]]:
    """The machine's Debian mirror and its deb822 stanzas for bookworm (copied into the stand-ins)."""
    stanzas: list[str] = []
    mirror = ""
    for path in SOURCES:
        if not path.is_file() or path.suffix not in {".sources", ".list", ""}:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                if re.search(r"^Suites:.*\bbookworm", stanza, re.MULTILINE):
                    stanzas.append(stanza.strip())
                    uri = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
                    if uri and not mirror and "security" not in uri.group(1):
                        mirror = uri.group(1)
        else:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2].startswith("bookworm"):
                    address = next(p for p in parts[1:] if not p.startswith("["))
                    suites = parts[parts.index(address) + 1]
                    components = " ".join(parts[parts.index(address) + 2 :])
                    stanzas.append(
                        f"Types: deb\nURIs: {address}\nSuites: {suites}\nComponents: {components}\n"
                        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
                    )
                    if not mirror and "security" not in address:
                        mirror = address
    if not stanzas:
        stanzas = [
            f"Types: deb\nURIs: {DEFAULT_MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        ]
    return mirror or DEFAULT_MIRROR, stanzas


# The environment of debootstrap and of commands run in the new root (plus any *_proxy): the caller's
# would leak in (a TMPDIR that does not exist in the root makes update-ca-certificates' mktemp fail).
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _step(argv: list[str]) -> None:
    """Run one step of the stand-in's root; a failure is one error naming the step and its output."""
    proxies = {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}
    env = {**CHROOT_ENV, **proxies}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv[:2])} failed (exit {result.returncode}):\n{tail}")


def build_minbase(podman: Podman, work: Path, progress: Progress) -> None:
    """Debian bookworm (minbase + CA certificates) from the machine's mirror, imported as MINBASE."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap (make images needs it)")
    mirror, stanzas = _mirror()
    progress(f"stand-in base: debootstrap --variant=minbase bookworm from {mirror}")
    rootfs = work / "rootfs"
    _step(["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", str(rootfs), mirror])
    # apt inside the stand-in builds uses the same sources as this machine.
    (rootfs / "etc/apt/sources.list").write_text("")
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text("\n\n".join(stanzas) + "\n")
    # Trust what this machine trusts: its local CAs join the image's system bundle.
    if LOCAL_CA_DIR.is_dir():
        target = rootfs / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for cert in LOCAL_CA_DIR.rglob("*.crt"):
            shutil.copy2(cert, target / cert.name)
        _step(["chroot", str(rootfs), "update-ca-certificates"])
    _slim(rootfs)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    archive = work / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True)  # noqa: S603, S607
    podman.run(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD ["bash"]',
        "--change",
        f"LABEL {STAND_IN_LABEL}=debian:bookworm-minbase",
        str(archive),
        MINBASE,
    )


# What Debian's official "slim" images leave out (debuerreotype's slimify): documentation, manual
# pages and translations, now and for every package installed later.
SLIM_EXCLUDES = [
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/linda/*",
    "/usr/share/lintian/overrides/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
    "/usr/share/groff/*",
]


def _slim(rootfs: Path) -> None:
    config = ["# mesh images: the slim variant (no docs, manual pages or translations)"]
    config += [f"path-exclude {pattern}" for pattern in SLIM_EXCLUDES]
    # Licences stay, as in the official images.
    config.append("path-include /usr/share/doc/*/copyright")
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text("\n".join(config) + "\n")
    for pattern in SLIM_EXCLUDES:
        for entry in rootfs.glob(pattern.lstrip("/")):
            if entry.is_dir() and not entry.is_symlink():
                if pattern.startswith("/usr/share/doc/"):
                    for child in entry.iterdir():
                        if child.name != "copyright":
                            shutil.rmtree(
                                child
                            ) if child.is_dir() and not child.is_symlink() else child.unlink()
                else:
                    shutil.rmtree(entry)
            else:
                entry.unlink()


def _standin_from_containerfile(
    podman: Podman, root: Path, image: str, containerfile: str, log: Path
) -> None:
    context = root / "containers" / "stand-ins"
    code = podman.stream(
        [
            "build",
            "--network",
            "host",
            "--pull=never",
            "--build-arg",
            f"BASE={MINBASE}",
            "--label",
            f"{STAND_IN_LABEL}={image}",
            "-f",
            str(context / containerfile),
            "-t",
            canonical(image),
            str(context),
        ],
        log,
    )
    if code != 0:
        raise RuntimeError(f"building the stand-in for {image} failed; see {log}")


def _uv_wheel(version: str) -> bytes:
    """The manylinux wheel of uv ``version`` for this machine, checked against PyPI's sha256."""
    machine = platform.machine()
    headers = {"Accept": "application/vnd.pypi.simple.v1+json"}  # PEP 691, the index pip and uv use
    with httpx.Client(verify=ssl.create_default_context(), timeout=60, follow_redirects=True) as client:
        index = client.get("https://pypi.org/simple/uv/", headers=headers)
        index.raise_for_status()
        for entry in index.json()["files"]:
            name = entry["filename"]
            if name.startswith(f"uv-{version}-") and "manylinux" in name and name.endswith(f"_{machine}.whl"):
                data = client.get(entry["url"]).content
                if hashlib.sha256(data).hexdigest() != entry["hashes"]["sha256"]:
                    raise RuntimeError(f"{name}: sha256 does not match PyPI's")
                return data
    raise RuntimeError(f"uv {version} has no manylinux wheel for {machine} on PyPI")


def build_uv_standin(podman: Podman, root: Path, image: str, work: Path, log: Path) -> None:
    version = image.rsplit(":", 1)[1]
    context = work / "uv"
    context.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(_uv_wheel(version))) as wheel:
        for binary in ("uv", "uvx"):
            member = next(n for n in wheel.namelist() if n.endswith(f".data/scripts/{binary}"))
            target = context / binary
            target.write_bytes(wheel.read(member))
            # A wheel does not keep the executable bit; the image's entry point needs it.
            target.chmod(0o755)
    shutil.copy2(root / "containers" / "stand-ins" / "uv.Containerfile", context / "Containerfile")
    code = podman.stream(
        [
            "build",
            "--network",
            "host",
            "--label",
            f"{STAND_IN_LABEL}={image}",
            "-t",
            canonical(image),
            str(context),
        ],
        log,
    )
    if code != 0:
        raise RuntimeError(f"building the stand-in for {image} failed; see {log}")


STAND_INS: list[tuple[str, str]] = [
    (r"^(docker\.io/(library/)?)?python:3\.11[\w.]*-slim-bookworm$", "python.Containerfile"),
    (r"^(docker\.io/(library/)?)?postgres:[\w.]*-?bookworm$", "postgres.Containerfile"),
    (r"^ghcr\.io/astral-sh/uv:[\d.]+$", "uv"),
]


def ensure_base(podman: Podman, root: Path, image: str, work: Path, progress: Progress) -> str:
    """Make ``image`` present: already there, pulled, or a stand-in. Returns which of the three."""
    if podman.image_exists(canonical(image)):
        return "present"
    try:
        podman.run("pull", "--quiet", canonical(image), timeout=PULL_TIMEOUT)
    except (PodmanError, subprocess.TimeoutExpired):
        pass
    else:
        return "pulled"
    kind = next((kind for pattern, kind in STAND_INS if re.match(pattern, image)), None)
    if kind is None:
        raise RuntimeError(f"{image} cannot be pulled and mesh images has no stand-in for it")
    started = time.monotonic()
    log = work.parent / "logs" / f"stand-in-{re.sub(r'[^a-z0-9.]+', '-', image)}.log"
    if kind == "uv":
        progress(f"{image} cannot be pulled: stand-in from uv's wheel on PyPI")
        build_uv_standin(podman, root, image, work, log)
    else:
        if not podman.image_exists(MINBASE):
            build_minbase(podman, work, progress)
        progress(f"{image} cannot be pulled: stand-in from Debian bookworm ({kind})")
        _standin_from_containerfile(podman, root, image, kind, log)
    progress(f"{image}: stand-in ready in {time.monotonic() - started:.0f} s")
    return "stand-in"


# -- the deployable images ------------------------------------------------------------------------


def build_image(
    podman: Podman, root: Path, spec: ImageSpec, log: Path, *, no_cache: bool = False
) -> BuiltImage:
    started = time.monotonic()
    args = [
        "build",
        "--network",
        "host",
        "--pull=never",
        # The image's own system bundle: on this machine the stand-ins trust its CAs; with the real
        # python image it is Debian's bundle, the same roots uv would use.
        "--build-arg",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "-f",
        str(root / DOCKERFILE),
        "--target",
        spec.target,
        *(f"--build-arg={name}={value}" for name, value in spec.build_args),
        "-t",
        spec.ref,
    ]
    if no_cache:
        args.append("--no-cache")
    code = podman.stream([*args, str(root)], log)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"building {spec.ref} failed (log: {log}):\n{tail}")
    return BuiltImage(spec.ref, time.monotonic() - started, podman.image_size(spec.ref))


def job_bases(root: Path) -> list[str]:
    """Images the k8s/ bootstrap Job runs (made like the Dockerfile's bases when they cannot be pulled)."""
    docs = [d for d in yaml.safe_load_all((root / BOOTSTRAP).read_text()) if d]
    return sorted(
        {c["image"] for d in docs if d["kind"] == "Job" for c in d["spec"]["template"]["spec"]["containers"]}
    )


def build_images(
    podman: Podman,
    registry: Registry,
    *,
    only: Iterable[str] = (),
    extra_bases: Iterable[str] = (),
    no_cache: bool = False,
    progress: Progress = lambda _: None,
) -> list[BuiltImage]:
    """Build every image (or ``only`` these), making missing base images first.

    A full build also makes the bootstrap Job's base, so that everything `mesh pods --no-build` runs
    is present afterwards, in a fresh (empty) podman store too.
    """
    root = registry.root
    chosen = [s for s in image_specs(registry) if not set(only) or s.name in set(only)]
    if not set(only):
        extra_bases = [*job_bases(root), *extra_bases]
    work_root = root / ".mesh" / "images"
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_root) as tmp:
        work = Path(tmp)
        for base in dict.fromkeys([*pinned_bases(root), *extra_bases]):
            ensure_base(podman, root, base, work, progress)
        built = []
        for spec in chosen:
            progress(f"building {spec.ref} from {DOCKERFILE} --target {spec.target}")
            image = build_image(
                podman, root, spec, work_root / "logs" / f"{spec.name}.log", no_cache=no_cache
            )
            progress(f"{image.ref}: {image.size / 1e6:.0f} MB, built in {image.seconds:.1f} s")
            built.append(image)
    return built
