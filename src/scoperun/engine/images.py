"""Build scoperun's container images (runner, and browser on top of it) from the Dockerfiles it ships.

Builds are skipped when an image with the same inputs already exists: the image carries a
content hash of its inputs (Dockerfile folder, base image id, extra CA, build args) as a label.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from scoperun.engine.base import ImageBuilder, ImageInfo
from scoperun.errors import EngineError, ImageError

__all__ = [
    "BASE_IMAGE_REMEDY",
    "DEFAULT_BASE_IMAGES",
    "LABEL_BASE_IMAGE",
    "LABEL_CA_BUNDLE",
    "SYSTEM_CA_BUNDLE",
    "BuildInputs",
    "LABEL_INPUTS_HASH",
    "LABEL_KIND",
    "RUNNER_DOCKERFILE_DIR",
    "ImageBuildResult",
    "build_image",
    "default_base_image",
    "dockerfile_dir",
    "inputs_hash",
    "remembered_inputs",
]

LABEL_INPUTS_HASH = "org.scoperun.inputs-hash"
LABEL_KIND = "org.scoperun.kind"
LABEL_BASE_IMAGE = "org.scoperun.base-image"
LABEL_CA_BUNDLE = "org.scoperun.ca-bundle"  # path of the extra CA bundle built in ("" = none)
# What `make image` and `scoperun demo` give a build when the file exists (TLS-intercepting proxies).
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Upstream base first (users with a registry), then the registry-free one.
DEFAULT_BASE_IMAGES = ("python:3.11-slim-bookworm", "scoperun-base:bookworm")
BASE_IMAGE_REMEDY = (
    "make one without a registry with `scripts/make-base-image.sh` (builds scoperun-base:bookworm "
    "from Debian packages), or run `docker pull python:3.11-slim-bookworm` where a registry answers"
)

ImageKind = Literal["runner", "browser"]
# The build argument that names each kind's base: the browser image is built FROM the runner.
_BASE_ARG: dict[str, str] = {"runner": "BASE_IMAGE", "browser": "RUNNER_IMAGE"}
_EXTRA_CA_DIR = "extra-ca"
_EXTRA_CA_FILE = "extra-ca.crt"
_LOG_TAIL_LINES = 25


def dockerfile_dir(kind: ImageKind = "runner") -> Path:
    """The folder holding the Dockerfile for `kind`, shipped inside the package.

    The canonical copy lives in the package so wheels carry it; the repo's images/<kind>/Dockerfile
    is a symlink to it.
    """
    # One `/` at a time: a namespace package's MultiplexedPath.joinpath takes a single name.
    # The result is a real Path for regular (non-zip) installs and for source checkouts.
    found = files("scoperun") / "_images" / kind
    if not isinstance(found, Path):
        raise ImageError(f"scoperun's Dockerfiles are inside an archive ({found}); install scoperun unzipped.")
    return found


RUNNER_DOCKERFILE_DIR: Path = dockerfile_dir("runner")


@dataclass(frozen=True)
class ImageBuildResult:
    """The outcome of build_image: which image, for which inputs, and whether it was reused."""

    tag: str
    image_id: str
    inputs_hash: str
    skipped: bool
    dry_run: bool = False  # nothing was built: `skipped` says whether a build would have been
    base_image: str = ""
    ca_bundle: str = ""


def _context_files(dockerfile_dir: Path) -> list[tuple[str, bytes]]:
    """The Dockerfile folder's files as (relative posix name, bytes), sorted by name."""
    if not (dockerfile_dir / "Dockerfile").is_file():
        raise ImageError(f"No Dockerfile in {dockerfile_dir}; reinstall scoperun (its package data is missing).")
    out: list[tuple[str, bytes]] = []
    for path in sorted(dockerfile_dir.rglob("*")):
        rel = path.relative_to(dockerfile_dir)
        # extra-ca/ is supplied by the builder; caches must not leak into the hash or context.
        if rel.parts[0] == _EXTRA_CA_DIR or "__pycache__" in rel.parts or not path.is_file():
            continue
        out.append((rel.as_posix(), path.read_bytes()))
    return out


def inputs_hash(
    dockerfile_dir: Path, *, base_image_id: str, ca_bundle: bytes | None, build_args: dict[str, str]
) -> str:
    """sha256 over everything that determines the image: files, base image id, CA, build args."""
    h = hashlib.sha256(b"scoperun-image-inputs-v1\0")
    for name, data in _context_files(dockerfile_dir):
        # Length-prefixed so that moving bytes between names always changes the hash.
        h.update(f"file:{name}:{len(data)}\0".encode())
        h.update(data)
    h.update(f"base:{base_image_id}\0".encode())
    ca = ca_bundle or b""  # no CA and an empty CA build the same image
    h.update(f"ca:{len(ca)}\0".encode())
    h.update(ca)
    h.update(b"args:" + json.dumps(build_args, sort_keys=True).encode())
    return h.hexdigest()


def _build_context(dockerfile_dir: Path, ca_bundle: bytes | None) -> io.BytesIO:
    """An in-memory tar build context: the Dockerfile folder plus extra-ca/ (maybe empty)."""
    buf = io.BytesIO()

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: reproducible context
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in _context_files(dockerfile_dir):
            add(tar, name, data)
        add(tar, f"{_EXTRA_CA_DIR}/.keep", b"")  # COPY extra-ca/ needs the folder to exist
        if ca_bundle:
            add(tar, f"{_EXTRA_CA_DIR}/{_EXTRA_CA_FILE}", ca_bundle)
    buf.seek(0)
    return buf


def _get_image(engine: ImageBuilder, name: str) -> ImageInfo | None:
    """The local image `name`, or None when the engine does not have it (EngineError if it cannot say)."""
    return engine.image_info(name)


def default_base_image(engine: ImageBuilder) -> str:
    """The first locally present default base: python:3.11-slim-bookworm, else scoperun-base:bookworm."""
    for name in DEFAULT_BASE_IMAGES:
        if _get_image(engine, name) is not None:
            return name
    raise ImageError(f"No base image for the runner ({' or '.join(DEFAULT_BASE_IMAGES)}): {BASE_IMAGE_REMEDY}.")


_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


def _stream_build(
    engine: ImageBuilder, progress: Callable[[str], None] | None, tail: deque[str], steps: list[str],
    context: io.BytesIO, *, tag: str, build_args: dict[str, str], labels: dict[str, str],
) -> str | None:
    """Run a build, feeding log lines to `progress` and step image ids to `steps`; return the image id
    it reports. A failure's message repeats the log's tail only when nobody saw the log."""
    image_id: str | None = None
    for event in engine.build_image(context, tag=tag, build_args=build_args, labels=labels):
        if event.error is not None:
            if progress is not None:
                raise ImageError(f"Image build failed: {event.error} (the build log is above)")
            tail.append(event.error)
            raise ImageError("Image build failed:\n" + "\n".join(tail))
        if event.image_id:
            image_id = event.image_id
        for line in (event.text or "").splitlines():
            step = _STEP_IMAGE.match(line)
            if step:
                steps.append(step.group(1))
            if line.strip():
                tail.append(line)
                if progress is not None:
                    progress(line)
    return image_id


def _remove_step_images(engine: ImageBuilder, steps: list[str], *, base_id: str) -> int:
    """Remove the untagged images a failed build left (newest first), never its base; the engine keeps
    any image that another image still builds on. Returns how many went."""
    removed = 0
    for image_id in reversed(steps):
        try:
            found = engine.image_info(image_id)
            if found is None or found.tags or found.id == base_id:
                continue  # gone, tagged (someone uses it), or the base the build started FROM
            removed += engine.remove_image(image_id)
        except EngineError:  # the engine refused: leave it
            continue
    return removed


@dataclass(frozen=True)
class BuildInputs:
    """The base image and CA bundle a build uses."""

    base_image: str
    ca_bundle: Path | None


def remembered_inputs(engine: ImageBuilder, *, kind: ImageKind, tag: str, default_base: str) -> BuildInputs:
    """The inputs for a bare `scoperun image build`: those `tag` was built with when they still exist
    (so what `make image` or `scoperun demo` built is reused), else `default_base` and the system CA bundle.

    Images built before the CA label existed are matched by trying no CA and the system bundle.
    """
    system_ca = SYSTEM_CA_BUNDLE if SYSTEM_CA_BUNDLE.is_file() else None
    existing = _get_image(engine, tag)
    if existing is None:
        return BuildInputs(default_base, system_ca)
    labels = existing.labels or {}
    base_name = labels.get(LABEL_BASE_IMAGE) or default_base
    base = _get_image(engine, base_name)
    if base is None:
        base_name, base = default_base, _get_image(engine, default_base)
    if LABEL_CA_BUNDLE in labels:
        path = Path(labels[LABEL_CA_BUNDLE]) if labels[LABEL_CA_BUNDLE] else None
        return BuildInputs(base_name, path if path is not None and path.is_file() else None)
    if base is not None:
        for candidate in (system_ca, None):
            ca = candidate.read_bytes() if candidate is not None else None
            digest = inputs_hash(dockerfile_dir(kind), base_image_id=base.id, ca_bundle=ca,
                                 build_args={_BASE_ARG[kind]: base_name})
            if digest == labels.get(LABEL_INPUTS_HASH):
                return BuildInputs(base_name, candidate)
    return BuildInputs(base_name, system_ca)


def build_image(
    engine: ImageBuilder,
    *,
    kind: ImageKind = "runner",
    tag: str,
    base_image: str,
    ca_bundle: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> ImageBuildResult:
    """Build image `tag` of `kind` FROM `base_image` (local only), unless one with the same inputs exists.

    For the browser kind, `base_image` is the runner image (its id is part of the inputs hash).
    `ca_bundle` is a PEM file added to the image's trust (TLS-intercepting proxies).
    """
    base = _get_image(engine, base_image)
    if base is None:
        raise ImageError(f"Base image {base_image} is not present locally (scoperun never pulls): {BASE_IMAGE_REMEDY}.")
    ca_bytes: bytes | None = None
    if ca_bundle is not None:
        try:
            ca_bytes = Path(ca_bundle).read_bytes()
        except OSError as exc:
            raise ImageError(
                f"Cannot read the CA bundle {ca_bundle}: {exc.strerror}. Give a readable PEM file."
            ) from exc
        if ca_bytes and b"-----BEGIN CERTIFICATE-----" not in ca_bytes:
            raise ImageError(f"The CA bundle {ca_bundle} holds no PEM certificate; give a PEM file.")

    src_dir = dockerfile_dir(kind)
    build_args = {_BASE_ARG[kind]: base_image}
    digest = inputs_hash(src_dir, base_image_id=base.id, ca_bundle=ca_bytes, build_args=build_args)

    existing = _get_image(engine, tag)
    known = dict(base_image=base_image, ca_bundle=str(ca_bundle) if ca_bundle else "")
    if existing is not None and not force and (existing.labels or {}).get(LABEL_INPUTS_HASH) == digest:
        return ImageBuildResult(tag=tag, image_id=existing.id, inputs_hash=digest, skipped=True, dry_run=dry_run,
                                **known)
    if dry_run:
        return ImageBuildResult(tag=tag, image_id=existing.id if existing else "", inputs_hash=digest,
                                skipped=False, dry_run=True, **known)

    labels = {LABEL_INPUTS_HASH: digest, LABEL_KIND: kind, LABEL_BASE_IMAGE: base_image,
              LABEL_CA_BUNDLE: known["ca_bundle"]}
    tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
    steps: list[str] = []
    try:
        reported = _stream_build(engine, progress, tail, steps, _build_context(src_dir, ca_bytes), tag=tag,
                                 build_args=build_args, labels=labels)
        built = engine.image_info(tag)
    except ImageError as exc:
        raise _cleaned(engine, steps, exc, base_id=base.id) from None
    except EngineError as exc:
        err = EngineError(f"Building {tag}: {exc}")
        if tail and progress is None:
            err = EngineError(f"{err}\nLast build output:\n" + "\n".join(tail))
        raise _cleaned(engine, steps, err, base_id=base.id) from exc
    if built is None:
        raise ImageError(f"The build of {tag} ended but the engine has no image {tag}; another build or a prune "
                         f"raced this one. Retry.")
    if reported and reported != built.id:
        raise ImageError(f"Built {reported} but {tag} points at {built.id}; another build raced this one. Retry.")
    return ImageBuildResult(tag=tag, image_id=built.id, inputs_hash=digest, skipped=False,
                            base_image=known["base_image"], ca_bundle=known["ca_bundle"])


def _cleaned(engine: ImageBuilder, steps: list[str], exc: EngineError, *, base_id: str) -> EngineError:
    """`exc`, after removing what the failed build left; its message says how much went."""
    removed = _remove_step_images(engine, steps, base_id=base_id)
    if not removed:
        return exc
    return type(exc)(f"{exc}\nRemoved the {removed} untagged intermediate image(s) the failed build left.")
