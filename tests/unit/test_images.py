"""Image inputs hashing, build context and build_image's decisions, against a fake engine."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from scoperun.engine.base import BuildEvent, ImageInfo
from scoperun.engine.images import (
    LABEL_INPUTS_HASH,
    LABEL_KIND,
    RUNNER_DOCKERFILE_DIR,
    _build_context,
    build_image,
    default_base_image,
    inputs_hash,
)
from scoperun.errors import EngineError, ImageError
from scoperun.testing import FakeBackend

REPO = Path(__file__).resolve().parents[2]
ARGS = {"BASE_IMAGE": "scoperun-base:bookworm"}


def _hash(
    d: Path = RUNNER_DOCKERFILE_DIR, base: str = "sha256:aaa", ca: bytes | None = None, args: dict[str, str] = ARGS
) -> str:
    return inputs_hash(d, base_image_id=base, ca_bundle=ca, build_args=args)


def test_dockerfile_ships_in_package_and_repo_symlink_points_at_it() -> None:
    """The runner Dockerfile is package data, and images/runner/Dockerfile in a checkout is the same file."""
    assert (RUNNER_DOCKERFILE_DIR / "Dockerfile").is_file()
    repo_copy = REPO / "images" / "runner" / "Dockerfile"
    if not repo_copy.exists():
        pytest.skip("not a source checkout")
    assert repo_copy.is_symlink()
    assert repo_copy.resolve() == (RUNNER_DOCKERFILE_DIR / "Dockerfile").resolve()


def test_dockerfile_follows_the_image_contract() -> None:
    """The Dockerfile has a configurable base, a venv, uid 1000, SIGKILL stop, and no pathlib/playwright."""
    text = (RUNNER_DOCKERFILE_DIR / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text and "FROM ${BASE_IMAGE}" in text
    assert "USER 1000:1000" in text and "STOPSIGNAL SIGKILL" in text and "ENV PATH=/opt/venv/bin:$PATH" in text
    assert 'CMD ["python", "--version"]' in text and "WORKDIR /workspace" in text
    assert '"pathlib' not in text and "playwright" not in text.lower().split("no playwright")[0]
    for pkg in (
        "pandas",
        "numpy",
        "openpyxl",
        "pypdf",
        "PyPDF2",
        "python-magic",
        "requests",
        "beautifulsoup4",
        "lxml",
        "tavily-python",
        "python-docx",
    ):
        assert f'"{pkg}==' in text, pkg


def test_inputs_hash_is_stable() -> None:
    """The same inputs always give the same sha256 hex digest."""
    assert _hash() == _hash() and len(_hash()) == 64


def test_inputs_hash_changes_with_each_input(tmp_path: Path) -> None:
    """A changed Dockerfile, base image id, CA bundle or build arg each change the hash."""
    copy = tmp_path / "runner"
    shutil.copytree(RUNNER_DOCKERFILE_DIR, copy)
    base = _hash(copy)
    assert base == _hash()  # the folder's location does not matter, only its contents
    seen = {
        base,
        _hash(copy, base="sha256:bbb"),
        _hash(copy, ca=b"-----BEGIN CERTIFICATE-----x"),
        _hash(copy, args={"BASE_IMAGE": "python:3.11-slim-bookworm"}),
    }
    (copy / "Dockerfile").write_text((copy / "Dockerfile").read_text() + "\n# changed\n")
    seen.add(_hash(copy))
    (copy / "extra.txt").write_text("new file")
    seen.add(_hash(copy))
    assert len(seen) == 6


def test_no_ca_and_empty_ca_hash_alike() -> None:
    """An empty CA file builds the same image as no CA, so they share one hash."""
    assert _hash(ca=None) == _hash(ca=b"")


def test_build_context_holds_dockerfile_and_extra_ca() -> None:
    """The tar context has the Dockerfile, the launcher, the extractor and extra-ca/, with extra-ca.crt only when a
    CA is given."""

    def names(ca: bytes | None) -> set[str]:
        with tarfile.open(fileobj=_build_context(RUNNER_DOCKERFILE_DIR, ca)) as tar:
            return set(tar.getnames())

    # the launcher (PID 1) and the document extractor ship in the image
    shipped = {"Dockerfile", "launcher.py", "scoperun_extract.py", "extra-ca/.keep"}
    assert names(None) == shipped
    assert names(b"PEM") == shipped | {"extra-ca/extra-ca.crt"}


def test_importing_images_does_not_import_docker() -> None:
    """Importing scoperun.engine.images works without touching the docker SDK or an engine."""
    code = "import sys, scoperun.engine.images; print('docker' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False"


# --- build_image through the engine contract (FakeBackend) --------------------------------------


def _image(id: str, labels: dict[str, str] | None = None) -> ImageInfo:
    return ImageInfo(id, id.removeprefix("sha256:")[:10], labels or {}, ())


BASE = {"scoperun-base:bookworm": _image("sha256:base")}


def test_missing_base_image_names_both_remedies() -> None:
    """Without the base image locally, build_image raises ImageError naming the script and the pull."""
    with pytest.raises(ImageError) as err:
        build_image(FakeBackend(), tag="t:1", base_image="scoperun-base:bookworm")
    assert "scripts/make-base-image.sh" in str(err.value) and "docker pull python:3.11-slim-bookworm" in str(err.value)


def test_build_streams_progress_and_labels_the_image() -> None:
    """A build streams log lines to progress, passes BASE_IMAGE, and labels the hash (never pulling: see below)."""
    engine, lines = FakeBackend(images=dict(BASE)), []
    result = build_image(engine, tag="t:1", base_image="scoperun-base:bookworm", progress=lines.append)
    call = engine.builds[0]
    assert not result.skipped and result.image_id == "sha256:new" and lines == ["Step 1/9 : ARG BASE_IMAGE"]
    assert call["build_args"] == ARGS and call["tag"] == "t:1" and call["context"].startswith(b"Dockerfile")
    assert call["labels"][LABEL_INPUTS_HASH] == result.inputs_hash and call["labels"][LABEL_KIND] == "runner"
    assert result.inputs_hash == _hash(base="sha256:base")


def test_same_inputs_skip_the_build_unless_forced(tmp_path: Path) -> None:
    """An image whose label matches the inputs hash is reused; force or a new CA rebuilds."""
    engine = FakeBackend(images=dict(BASE))
    first = build_image(engine, tag="t:1", base_image="scoperun-base:bookworm")
    second = build_image(engine, tag="t:1", base_image="scoperun-base:bookworm")
    assert second.skipped and second.inputs_hash == first.inputs_hash and len(engine.builds) == 1
    assert not build_image(engine, tag="t:1", base_image="scoperun-base:bookworm", force=True).skipped
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    third = build_image(engine, tag="t:1", base_image="scoperun-base:bookworm", ca_bundle=ca)
    assert not third.skipped and third.inputs_hash != first.inputs_hash and len(engine.builds) == 3


def test_build_error_carries_the_last_log_lines() -> None:
    """A failing build raises ImageError that includes the log tail and the engine's error."""
    events = [BuildEvent(text="Step 5/9 : RUN pip install\n"), BuildEvent(text="SSL: CERTIFICATE_VERIFY_FAILED\n"),
              BuildEvent(error="returned a non-zero code: 1")]
    with pytest.raises(ImageError) as err:
        build_image(FakeBackend(images=dict(BASE), build_events=events), tag="t:1", base_image="scoperun-base:bookworm")
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value) and "non-zero code" in str(err.value)


def test_a_failed_build_removes_its_untagged_step_images_but_not_its_base() -> None:
    """After a failed build, the step images it left go (newest first); its base and tagged images stay."""
    step1, step2, tagged, base = "a1" * 6, "b2" * 6, "c3" * 6, "d4" * 6
    engine = FakeBackend(images={"scoperun-base:bookworm": _image(base), base: _image(base), step1: _image(step1),
                                 step2: _image(step2), tagged: ImageInfo(tagged, tagged[:10], {}, ("other:1",))},
                         build_events=[*(BuildEvent(text=f" ---> {i}\n") for i in (step1, tagged, base, step2)),
                                       BuildEvent(error="returned a non-zero code: 1")])
    with pytest.raises(ImageError) as err:
        build_image(engine, tag="t:1", base_image="scoperun-base:bookworm")
    assert "Removed the 2 untagged intermediate image(s)" in str(err.value) and "non-zero code" in str(err.value)
    assert engine.removed_images == [step2, step1] and tagged in engine.images and base in engine.images


def test_bad_ca_bundle_is_refused(tmp_path: Path) -> None:
    """A missing or non-PEM CA bundle raises ImageError before any build starts."""
    engine = FakeBackend(images=dict(BASE))
    with pytest.raises(ImageError):
        build_image(engine, tag="t:1", base_image="scoperun-base:bookworm", ca_bundle=tmp_path / "missing.crt")
    (tmp_path / "x.crt").write_text("not a certificate")
    with pytest.raises(ImageError):
        build_image(engine, tag="t:1", base_image="scoperun-base:bookworm", ca_bundle=tmp_path / "x.crt")
    assert engine.builds == []


def test_engine_errors_become_engine_error() -> None:
    """An unreachable engine surfaces as EngineError, not ImageError (nor a docker or requests exception)."""
    with pytest.raises(EngineError) as err:
        build_image(FakeBackend(unreachable="connection refused"), tag="t:1", base_image="scoperun-base:bookworm")
    assert not isinstance(err.value, ImageError)


def test_default_base_image_prefers_upstream() -> None:
    """python:3.11-slim-bookworm wins when present, else scoperun-base:bookworm, else ImageError."""
    upstream = {"python:3.11-slim-bookworm": _image("sha256:up")}
    assert default_base_image(FakeBackend(images={**BASE, **upstream})) == "python:3.11-slim-bookworm"
    assert default_base_image(FakeBackend(images=dict(BASE))) == "scoperun-base:bookworm"
    with pytest.raises(ImageError) as err:
        default_base_image(FakeBackend())
    assert "make-base-image.sh" in str(err.value)


# --- the Docker implementation of the builder contract (engine.dockerops) ---------------------------
# The code under test here IS the docker-py adapter, so a stand-in for docker-py's low-level API is the
# only way to see the exact build call without a real build (the real one runs in scripts/build-images.sh
# and tests/integration).

docker_errors = pytest.importorskip("docker.errors")


class _DockerImages:
    def __init__(self, images: dict[str, Any]) -> None:
        self.images = images

    def get(self, name: str) -> Any:
        if name not in self.images:
            raise docker_errors.ImageNotFound(f"No such image: {name}")
        return self.images[name]


class _DockerAPI:
    def __init__(self, stream: list[dict[str, Any]]) -> None:
        self.stream, self.calls = stream, []

    def build(self, **kwargs: Any):
        self.calls.append(kwargs)
        yield from self.stream


class _DockerClient:
    def __init__(self, images: dict[str, Any], stream: list[dict[str, Any]]) -> None:
        self.images = _DockerImages(images)
        self.api = _DockerAPI(stream)


def test_docker_build_never_pulls_and_reads_the_engines_messages() -> None:
    """The docker adapter builds with pull=False, rm and forcerm, decoded; log, image id and errorDetail become events."""
    from scoperun.engine.dockerops import build_image as docker_build

    stream = [{"stream": "Step 1/9 : ARG BASE_IMAGE\n"}, {"aux": {"ID": "sha256:new"}},
              {"error": "x", "errorDetail": {"message": "returned a non-zero code: 1"}}, {"stream": "after\n"}]
    client = _DockerClient({}, stream)
    events = list(docker_build(client, io.BytesIO(b"ctx"), tag="t:1", build_args=ARGS, labels={"l": "1"}))  # type: ignore[arg-type]
    call = client.api.calls[0]
    assert call["buildargs"] == ARGS and call["pull"] is False and call["rm"] is True and call["decode"] is True
    assert call["forcerm"] is True and call["custom_context"] is True and call["labels"] == {"l": "1"}
    assert events == [BuildEvent(text="Step 1/9 : ARG BASE_IMAGE\n"), BuildEvent(image_id="sha256:new"),
                      BuildEvent(error="returned a non-zero code: 1")]


def test_docker_engine_errors_become_engine_error() -> None:
    """A requests or docker error from docker-py becomes EngineError (the one mapping), never leaks as itself."""
    import requests

    from scoperun.engine.dockerops import build_image as docker_build
    from scoperun.engine.dockerops import image_info

    class Down(_DockerClient):
        def __init__(self) -> None:
            super().__init__({}, [])
            self.images.get = self._fail  # type: ignore[method-assign]

        def _fail(self, name: str) -> None:
            raise requests.exceptions.ConnectionError("connection refused")

    with pytest.raises(EngineError) as err:
        image_info(Down(), "scoperun-base:bookworm")  # type: ignore[arg-type]
    assert not isinstance(err.value, ImageError) and "connection refused" in str(err.value)
    assert image_info(_DockerClient({}, []), "missing:1") is None  # type: ignore[arg-type]
    broken = _DockerClient({}, [])
    broken.api.build = lambda **_: (_ for _ in ()).throw(docker_errors.APIError("boom"))  # type: ignore[method-assign]
    with pytest.raises(EngineError, match="failed to build image t:1"):
        list(docker_build(broken, io.BytesIO(b""), tag="t:1", build_args={}, labels={}))  # type: ignore[arg-type]


def test_context_tar_is_reproducible() -> None:
    """Two contexts for the same inputs are byte-identical (fixed mtimes, sorted names)."""
    a = _build_context(RUNNER_DOCKERFILE_DIR, b"PEM").getvalue()
    assert a == _build_context(RUNNER_DOCKERFILE_DIR, b"PEM").getvalue()
    assert isinstance(io.BytesIO(a), io.BytesIO)
