"""Doctor's engine checks through the engine contract (FakeBackend), without an engine."""

from __future__ import annotations

from scoperun.doctor import _check_image, _check_runc
from scoperun.engine.base import EngineVersion, ImageInfo
from scoperun.testing import FakeBackend


def test_image_check_reports_a_missing_image_and_the_inputs_of_a_present_one() -> None:
    """A missing image fails with its fix; a present one shows its short id and inputs hash."""
    engine = FakeBackend(images={"run:1": ImageInfo("sha256:abc", "sha256:abc", {"org.scoperun.inputs-hash": "f" * 20})})
    missing = _check_image("image", "run:2", engine, fix="make image")
    assert not missing.ok and missing.detail == "image run:2 is missing" and missing.fix == "make image"
    present = _check_image("image", "run:1", engine, fix="make image")
    assert present.ok and present.detail == "run:1 (sha256:abc, inputs ffffffffffff)"


def test_runc_check_reads_the_engine_components() -> None:
    """The runc check uses the runc version the engine reports; without one it only warns."""
    assert _check_runc(FakeBackend(version=EngineVersion("27", "1.45", {"runc": "1.1.12"}))).ok
    unknown = _check_runc(FakeBackend(version=EngineVersion("27", "1.45", {})))
    assert not unknown.ok and unknown.severity == "warning"
    assert _check_runc(None).detail == "not checked: no engine"
