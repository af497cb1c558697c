"""The launcher protocol: the host's tag reader, and the launcher itself run as a plain process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scoperun.engine.capture import BoundedBuffer
from scoperun.engine.launched import TaggedStream, new_tag

LAUNCHER = Path(__file__).resolve().parents[2] / "src" / "scoperun" / "_images" / "runner" / "launcher.py"


def _stream(tag: str) -> tuple[TaggedStream, BoundedBuffer]:
    buf = BoundedBuffer(1 << 20)
    return TaggedStream(buf, tag.encode()), buf


@pytest.mark.parametrize("cut", [1, 3, 7, 20, 40, 60])
def test_end_line_is_found_across_any_chunk_split(cut: int) -> None:
    """Output without a final newline, then the tag line split anywhere: output exact, exit read."""
    tag = new_tag()
    data = b"partial output" + tag.encode() + b'{"code": 4, "how": "exited"}\n'
    stream, buf = _stream(tag)
    for i in range(0, len(data), cut):
        stream.feed(data[i:i + cut])
    stream.close()
    assert stream.end == {"code": 4, "how": "exited"} and buf.full_bytes()[0] == b"partial output"


def test_a_forged_tag_is_plain_output_and_bytes_after_the_end_do_not_count() -> None:
    """A line that looks like an end line with another tag is output; what follows the real end is dropped."""
    tag, forged = new_tag(), new_tag()
    stream, buf = _stream(tag)
    stream.feed(forged.encode() + b'{"code": 0}\n')
    stream.feed(tag.encode() + b'{"code": 1, "how": "exited"}\nlate\n')
    stream.feed(b"later still")
    stream.close()
    assert buf.full_bytes()[0] == forged.encode() + b'{"code": 0}\n' and stream.end["code"] == 1


def test_a_malformed_or_missing_end_leaves_the_judgement_to_the_engine() -> None:
    """A tag followed by junk is malformed (no end); a stream without a tag keeps all its bytes."""
    tag = new_tag()
    bad, _ = _stream(tag)
    bad.feed(tag.encode() + b"not json\n")
    assert bad.ended and bad.end is None and bad.malformed
    none, buf = _stream(tag)
    none.feed(b"x" * 100)
    none.close()
    assert none.end is None and buf.full_bytes()[0] == b"x" * 100


def _launch(request: dict, idle: str = "30") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), idle], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, timeout=60)


def test_launcher_runs_one_request_and_ends_both_streams_with_the_tag(tmp_path: Path) -> None:
    """The child gets argv, folder and the merged environment; both streams end with the tag and exit code."""
    tag = new_tag()
    code = "import os, sys; print(os.getcwd(), os.environ['SECRET'], 'PATH' in os.environ); " \
           "print('err', file=sys.stderr); sys.exit(7)"
    proc = _launch({"argv": [sys.executable, "-c", code], "env": {"SECRET": "s3"}, "cwd": str(tmp_path),
                    "timeout": 30, "tag": tag})
    assert proc.returncode == 0
    out, _, end = proc.stdout.partition(tag)
    assert out == f"{tmp_path} s3 True\n" and json.loads(end)["code"] == 7 and json.loads(end)["how"] == "exited"
    err, _, end_err = proc.stderr.partition(tag)
    assert err == "err\n" and json.loads(end_err)["code"] == 7


def test_launcher_enforces_the_timeout_on_the_whole_process_group(tmp_path: Path) -> None:
    """At the timeout the script and its children are killed; the end line says timeout, code 137."""
    tag = new_tag()
    marker = tmp_path / "child-alive"
    script = f"import subprocess, time; subprocess.Popen(['sh', '-c', 'sleep 3; touch {marker}']); time.sleep(60)"
    t = time.monotonic()
    proc = _launch({"argv": [sys.executable, "-c", script], "env": {}, "cwd": str(tmp_path), "timeout": 1,
                    "tag": tag})
    assert time.monotonic() - t < 30
    end = json.loads(proc.stdout.partition(tag)[2])
    assert end == {"code": 137, "how": "timeout", "oom_known": end["oom_known"]}
    time.sleep(4)
    assert not marker.exists()  # the child in the script's group died with it


def test_launcher_exits_quietly_when_nobody_asks(tmp_path: Path) -> None:
    """An idle launcher whose stdin closes, or whose idle time passes, exits 0 without output."""
    proc = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), "30"], input="", capture_output=True,
                          text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_live_output_is_passed_on_at_once_and_never_includes_the_end_line() -> None:
    """A listener gets each chunk as it arrives (nothing held back without a tag start), never the tag line."""
    tag = new_tag()
    got: list[bytes] = []
    buf = BoundedBuffer(1 << 20)
    stream = TaggedStream(buf, tag.encode(), got.append)
    stream.feed(b"line one\n")
    assert got == [b"line one\n"]
    stream.feed(b"two\x1e")  # could be the start of the tag: the \x1e waits
    assert got == [b"line one\n", b"two"]
    stream.feed(b"not a tag\n" + tag.encode() + b'{"code": 0, "how": "exited"}\n')
    assert b"".join(got) == b"line one\ntwo\x1enot a tag\n" == buf.full_bytes()[0]
