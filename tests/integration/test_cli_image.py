"""`scoperun image build` on the real engine: bare reuses the inputs an image was built with; a failed
build prints its log once and leaves no dangling image behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from scoperun.engine.images import LABEL_BASE_IMAGE, SYSTEM_CA_BUNDLE
from tests.integration.conftest import IMAGE


def image_build(*args: str, image: str = IMAGE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCOPERUN_IMAGE": image}
    return subprocess.run([sys.executable, "-m", "scoperun", "image", "build", *args], capture_output=True,
                          text=True, env=env, timeout=900)


def test_bare_image_build_reuses_what_an_explicit_build_made(docker_client) -> None:
    """After a build with --base and --ca-bundle (as `make image` does), the bare command is skipped, no log."""
    tag = f"scoperun-runner:cli-test-{uuid.uuid4().hex[:8]}"
    base = (docker_client.images.get(IMAGE).labels or {}).get(LABEL_BASE_IMAGE, "scoperun-base:bookworm")
    ca = ["--ca-bundle", str(SYSTEM_CA_BUNDLE)] if SYSTEM_CA_BUNDLE.is_file() else []
    try:
        first = image_build("--base", base, *ca, "--tag", tag)
        assert first.returncode == 0, first.stderr[-3000:]
        bare = image_build(image=tag)
        assert bare.returncode == 0, bare.stderr
        assert "up to date (build skipped)" in bare.stdout and base in bare.stdout
        assert "Step " not in bare.stderr  # no build log: nothing was built
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)


def test_failed_build_prints_its_log_once_and_leaves_no_dangling_image(docker_client) -> None:
    """A build that fails (base whose user cannot apt-get) exits 125, says the error once, removes its layers."""
    tag = f"scoperun-runner:cli-test-fail-{uuid.uuid4().hex[:8]}"
    proc = image_build("--base", IMAGE, "--tag", tag, "--force")
    assert proc.returncode == 125, proc.stderr[-3000:]
    assert proc.stderr.count("returned a non-zero code") == 1
    assert proc.stderr.count("Step 1/") == 1  # the log is printed once, not again inside the error
    steps = re.findall(r"^ ---> ([0-9a-f]{12})$", proc.stderr, flags=re.M)
    assert steps, proc.stderr[-2000:]
    import docker.errors

    left = []
    for image_id in steps:
        try:
            image = docker_client.images.get(image_id)
        except docker.errors.ImageNotFound:
            continue
        if image.id != docker_client.images.get(IMAGE).id:  # the base itself stays, of course
            left.append(image_id)
    assert not left, f"the failed build left images {left}"
    try:
        docker_client.images.get(tag)
        raise AssertionError(f"{tag} exists after a failed build")
    except docker.errors.ImageNotFound:
        pass
    assert "Traceback" not in proc.stderr and Path(sys.executable).exists()
