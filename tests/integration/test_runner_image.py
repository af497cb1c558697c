"""The runner image, built and run on the real Docker engine, with the sample tools on real files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scoperun.engine.images import build_image, default_base_image
from scoperun.sample import create_sample_workspace

pytestmark = pytest.mark.integration

TAG = "scoperun-runner:latest"
TEST_LABEL = {"org.scoperun.test": "1"}
IMPORTS = "import pandas, numpy, openpyxl, pypdf, PyPDF2, magic, requests, bs4, lxml, tavily, docx; print('ok')"


def _ca_bundle() -> Path | None:
    # The host's bundle: required where a TLS-intercepting proxy sits before the package index,
    # harmless elsewhere (it holds the same public roots the image trusts anyway).
    explicit = os.environ.get("SCOPERUN_IMAGE_CA_BUNDLE")
    if explicit:
        return Path(explicit)
    host = Path("/etc/ssl/certs/ca-certificates.crt")
    return host if host.is_file() else None


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    import docker

    c = docker.from_env()
    c.ping()  # a missing engine is a failure here, never a skip
    yield c
    c.close()


@pytest.fixture(scope="module")
def runner_image(client: Any) -> Iterator[str]:
    from scoperun.engine.docker import DockerBackend

    engine = DockerBackend(remove_in_background=False, timeout=600)  # image builds go through the engine contract
    base = default_base_image(engine)
    first = build_image(engine, tag=TAG, base_image=base, ca_bundle=_ca_bundle(), progress=lambda line: None)
    second = build_image(engine, tag=TAG, base_image=base, ca_bundle=_ca_bundle())
    engine.close()
    assert second.skipped and second.image_id == first.image_id and second.inputs_hash == first.inputs_hash
    yield TAG


def _run(client: Any, image: str, command: list[str], **kwargs: Any) -> str:
    """Run a fresh labelled container as uid 1000 and return its output; the container is always removed."""
    container = client.containers.run(
        image,
        command,
        user="1000:1000",
        labels=TEST_LABEL,
        detach=True,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={"/tmp": "size=64m"},
        **kwargs,
    )
    try:
        status = container.wait(timeout=300)
        logs = container.logs(stdout=True, stderr=True).decode()
        assert status["StatusCode"] == 0, logs
        return logs
    finally:
        container.remove(force=True)


def test_second_build_is_skipped(runner_image: str, client: Any) -> None:
    """Building the runner twice with the same inputs reuses the image, which carries the scoperun labels."""
    labels = client.images.get(runner_image).labels
    assert labels["org.scoperun.kind"] == "runner" and len(labels["org.scoperun.inputs-hash"]) == 64


def test_packages_import_as_uid_1000(runner_image: str, client: Any) -> None:
    """Every package of the plan imports in the image as the non-root user, with the venv's python."""
    out = client.containers.run(
        runner_image, ["python", "-c", IMPORTS], user="1000:1000", remove=True, labels=TEST_LABEL, network_mode="none"
    )
    assert out.decode().strip() == "ok"
    which = _run(client, runner_image, ["sh", "-c", "command -v python; command -v python3; id -u"])
    assert which.split() == ["/opt/venv/bin/python", "/opt/venv/bin/python3", "1000"]


def test_sample_tools_run_in_the_image(runner_image: str, client: Any, tmp_path: Path) -> None:
    """Both sample tools run in the image on a bind-mounted case: the inventory lists the PDF, files get sorted."""
    case = create_sample_workspace(tmp_path / "ws", owner=(1000, 1000))
    if os.geteuid() != 0:
        # Without root the files cannot be given to uid 1000; let the container's user write anyway.
        for p in [case, *case.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
    tools = case.parent.parent / "Tools"
    workdir = f"/workspace/projects/{case.name}"
    volumes = {str(case): {"bind": workdir, "mode": "rw"}, str(tools): {"bind": "/workspace/Tools", "mode": "ro"}}

    out = _run(
        client,
        runner_image,
        ["python", "/workspace/Tools/create_file_inventory.py", "--format", "json", "--output", "inventory.json"],
        working_dir=workdir,
        volumes=volumes,
    )
    assert "Wrote inventory" in out
    doc = json.loads((case / "inventory.json").read_text())
    by_path = {e["path"]: e for e in doc["files"]}
    pdf = by_path["ER_visit_2025-01-15.pdf"]
    assert pdf["type"] == "application/pdf" and pdf["pages"] == 3  # libmagic and pypdf in the image
    assert "inventory.json" not in by_path

    out = _run(
        client,
        runner_image,
        ["bash", "/workspace/Tools/organize_medical_subfolders.sh"],
        working_dir=workdir,
        volumes=volumes,
    )
    assert "total moved: 9" in out, out
    assert (case / "Medical Records/ER/ER_visit_2025-01-15.pdf").is_file()
    assert (case / "Medical Records/Imaging/MRI_report.pdf").is_file()
    assert not (case / "MRI_report.pdf").exists()
    assert (case / "Medical Records/ER").stat().st_uid == 1000
    if os.geteuid() == 0:
        assert all(p.stat().st_uid == 0 for p in tools.iterdir())
