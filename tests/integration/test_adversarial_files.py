"""Adversarial suite, part 1: files, paths, devices, names, output bytes and secrets.

Each case asserts the run's status; the `guard` checks that the host and the workspace outside
the case are untouched, that no container is left, and that the audit record is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from scoperun import ExecutionRequest, Status
from scoperun.executor import Executor
from scoperun.models import Hazard
from tests.conftest import CASE, OTHER_CASE
from tests.integration._adversarial import Guard, snapshot_host, snapshot_outside
from tests.integration.conftest import read_record


def test_06_writing_into_tools_fails_read_only(guard: Guard) -> None:
    """Overwriting, creating, deleting or chmod-ing in Tools fails with EROFS; Tools is unchanged."""
    result = guard.run("""
import errno, os
attempts = [lambda: open('/workspace/Tools/hello.py', 'a').write('pwned'),
            lambda: open('/workspace/Tools/new.py', 'w').write('x'),
            lambda: os.remove('/workspace/Tools/hello.sh'),
            lambda: os.chmod('/workspace/Tools/hello.py', 0o777)]
for attempt in attempts:
    try:
        attempt(); print('WROTE')
    except OSError as e:
        print(errno.errorcode[e.errno])
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    codes = result.stdout.text.split()
    assert len(codes) == 4 and set(codes) <= {"EROFS", "EACCES"} and codes[1:3] == ["EROFS", "EROFS"]


def test_07_other_case_is_unreachable_by_path_dotdot_and_proc(guard: Guard, workspace: Path) -> None:
    """Another case cannot be read by its container path, by `..`, through /proc/*/root or by its host path."""
    host_path = workspace / "projects" / OTHER_CASE / "secret.txt"
    result = guard.run(f"""
import sys
paths = ['/workspace/projects/{OTHER_CASE}/secret.txt', '../{OTHER_CASE}/secret.txt',
         '/proc/self/root/workspace/projects/{OTHER_CASE}/secret.txt',
         '/proc/1/root/workspace/projects/{OTHER_CASE}/secret.txt',
         '/proc/self/cwd/../{OTHER_CASE}/secret.txt', sys.argv[1], '/proc/1/root' + sys.argv[1]]
for p in paths:
    try:
        print('READ', open(p).read().strip())
    except OSError as e:
        print('denied', type(e).__name__)
""", args=[str(host_path)])
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert "READ" not in result.stdout.text and "private" not in result.stdout.text
    # /proc/1 is the launcher, non-dumpable: its root is refused outright (PermissionError) before any lookup.
    lines = result.stdout.text.splitlines()
    assert len(lines) == 7 and all(line in ("denied FileNotFoundError", "denied PermissionError") for line in lines)
    assert [line for i, line in enumerate(lines) if i not in (3, 6)] == ["denied FileNotFoundError"] * 5


def test_08_symlinks_planted_by_one_run_do_not_reach_out_later(guard: Guard, workspace: Path,
                                                              executor: Executor) -> None:
    """Links to /etc/passwd or another case: reported as hazards, resolved in the container by the
    next run (never to host files), and refused as a working folder by the host."""
    other_host = workspace / "projects" / OTHER_CASE
    plant = guard.run(f"""
import os
os.symlink('/etc/passwd', 'passwd')
os.symlink('../{OTHER_CASE}', 'other')
os.symlink('{other_host}/secret.txt', 'abs-secret')
""", name="plant.py")
    assert plant.status is Status.SUCCEEDED, plant.stderr.text
    assert {(h.path, h.kind) for h in plant.hazards} == {
        ("passwd", "symlink-outside"), ("other", "symlink-outside"), ("abs-secret", "symlink-outside")}

    follow = guard.run("""
import hashlib
print('passwd', hashlib.sha256(open('passwd', 'rb').read()).hexdigest())
for p in ('other/secret.txt', 'abs-secret'):
    try:
        print('READ', open(p).read())
    except OSError as e:
        print('denied', type(e).__name__)
""", name="follow.py")
    assert follow.status is Status.SUCCEEDED, follow.stderr.text
    assert snapshot_host()["/etc/passwd"] not in follow.stdout.text  # the container's own passwd
    assert "READ" not in follow.stdout.text and follow.stdout.text.count("denied FileNotFoundError") == 2

    before = snapshot_outside(workspace, CASE)
    refused = executor.run(ExecutionRequest(script="Tools/follow.py", case=CASE, working_dir="other"))
    assert refused.status is Status.REJECTED and "workdir-outside-case" in refused.message
    assert snapshot_outside(workspace, CASE) == before
    guard.assert_audited(refused)


def test_09_hardlinks_cannot_be_made_to_files_outside_and_planted_ones_are_reported(
        guard: Guard, workspace: Path) -> None:
    """Inside a run, hard links to Tools or /tmp fail (EXDEV); a host-planted link out of the case is reported."""
    os.link(workspace / "projects" / OTHER_CASE / "secret.txt", workspace / "projects" / CASE / "planted.txt")
    result = guard.run("""
import errno, os
open('/tmp/t', 'w').write('x')
for src in ('/workspace/Tools/hello.py', '/tmp/t', '/etc/passwd'):
    try:
        os.link(src, 'link-' + os.path.basename(src)); print('LINKED', src)
    except OSError as e:
        print(errno.errorcode[e.errno])
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert "LINKED" not in result.stdout.text
    assert result.stdout.text.split()[:2] == ["EXDEV", "EXDEV"]
    planted = [h for h in result.hazards if h.kind == "hardlink"]
    assert planted == [Hazard(kind="hardlink", path="planted.txt", outside_links=1, neutralised=False,
                              introduced=False,  # planted by the host before the run, not by it
                              detail="2 hard links, 1 of them outside the case (writes here change a file elsewhere)")]


def test_10_setuid_file_written_by_a_run_is_defused(guard: Guard, workspace: Path) -> None:
    """A run can set setuid/setgid on its file; the host clears the bits right after and reports them."""
    result = guard.run("""
import os, shutil
shutil.copy('/usr/bin/id', 'myid')
os.chmod('myid', 0o6755)
print(oct(os.stat('myid').st_mode & 0o7777))
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.stdout.text.strip() == "0o6755"
    assert {h.kind for h in result.hazards} == {"setuid", "setgid"}
    assert all(h.neutralised for h in result.hazards)
    assert stat.S_IMODE((workspace / "projects" / CASE / "myid").lstat().st_mode) == 0o755


def test_11_dev_and_proc_show_no_host_devices_and_no_docker_socket(guard: Guard) -> None:
    """/dev holds only the engine's harmless defaults, the engine socket is absent and /proc is masked."""
    result = guard.run("""
import os
print('dev', ' '.join(sorted(os.listdir('/dev'))))
for p in ('/var/run/docker.sock', '/run/docker.sock', '/dev/sda', '/dev/vda', '/dev/mem', '/dev/kmsg'):
    print(p, os.path.exists(p))
print('kcore', len(open('/proc/kcore', 'rb').read(16)) if os.path.exists('/proc/kcore') else 'absent')
try:
    open('/proc/sysrq-trigger', 'w').write('h'); print('sysrq WROTE')
except OSError as e:
    print('sysrq', type(e).__name__)
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    lines = result.stdout.text.splitlines()
    devices = set(lines[0].split()[1:])
    assert devices <= {"core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                       "stdin", "stdout", "tty", "urandom", "zero"}
    assert all(line.endswith("False") for line in lines[1:7])
    assert lines[7] in {"kcore 0", "kcore absent"}  # masked by the engine with /dev/null, or not built in
    assert lines[8].startswith("sysrq ") and "WROTE" not in lines[8]


def test_13_file_names_with_newlines_and_non_utf8_bytes(guard: Guard, workspace: Path) -> None:
    """Odd names are created and kept; hazards with such names are escaped; the record stays valid JSON."""
    result = guard.run("""
import os
open(b'new\\nline.txt', 'w').write('x')
open(b'bad\\xff\\xfe.txt', 'w').write('y')
os.symlink('/etc/passwd', b'link\\n\\xff')
print(len(os.listdir(b'.')))
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    names = set(os.listdir(os.fsencode(workspace / "projects" / CASE)))
    assert {b"new\nline.txt", b"bad\xff\xfe.txt", b"link\n\xff"} <= names
    assert result.hazards[0].path == "link\\n\\xff"
    assert read_record(workspace, result.execution_id)["hazards"][0]["path"] == "link\\n\\xff"


def test_14_output_with_invalid_utf8_and_nul_bytes(guard: Guard, workspace: Path) -> None:
    """Invalid UTF-8 becomes U+FFFD, NUL bytes are kept as text, sizes count raw bytes."""
    result = guard.run("""
import sys
sys.stdout.buffer.write(b'ok\\xff\\xfe\\x00end\\n')
sys.stderr.buffer.write(b'\\xc3(\\x00')
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.stdout.text == "ok\ufffd\ufffd\x00end\n" and result.stdout.total_bytes == 9
    assert result.stderr.text == "\ufffd(\x00"
    assert read_record(workspace, result.execution_id)["stdout_length"] == 9


def test_15_printing_a_secret_whole_split_or_in_part_is_redacted(guard: Guard, workspace: Path, settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A passed-through secret printed whole, in 4-character lines, as a substring or in a traceback
    appears nowhere: not in the result, not in the audit record."""
    secret = "sk-test-9c1f4e7a2b8d3f60aa"
    monkeypatch.setenv("SCOPERUN_ADV_SECRET", secret)
    with Executor(settings.model_copy(update={"secret_env": ["SCOPERUN_ADV_SECRET"]})) as ex:
        result = guard.run("""
import os, sys
s = os.environ['SCOPERUN_ADV_SECRET']
print('whole', s)
print('\\n'.join(s[i:i + 4] for i in range(0, len(s), 4)))
print('part', s[5:15], file=sys.stderr)
raise RuntimeError('bad key ' + s)
""", executor=ex, args=[secret])
    assert result.status is Status.FAILED and "RuntimeError" in result.stderr.text
    printed = result.stdout.text + result.stderr.text
    assert not any(secret[i:i + 4] in printed for i in range(0, len(secret) - 4, 4))
    shown = result.model_dump_json() + (workspace / result.audit_record).read_text()
    assert not any(secret[i:i + 8] in shown for i in range(len(secret) - 7))
    assert "[REDACTED:SCOPERUN_ADV_SECRET]" in result.stdout.text and result.args == ["[REDACTED:SCOPERUN_ADV_SECRET]"]


def test_16_a_script_cannot_delete_itself(guard: Guard, workspace: Path, executor: Executor) -> None:
    """Deleting its own file fails for a Tools script and for an agent's temp script; both stay intact."""
    code = "import errno, os, sys\ntry:\n    os.remove(sys.argv[0]); print('DELETED')\nexcept OSError as e:\n" \
           "    print(errno.errorcode[e.errno])\n"
    tool = guard.run(code, name="selfdelete.py")
    assert tool.status is Status.SUCCEEDED and tool.stdout.text.strip() == "EROFS"
    before, host = snapshot_outside(workspace, CASE), snapshot_host()
    temp = executor.run_code(code, case=CASE, script_name="selfdelete.py")
    assert temp.status is Status.SUCCEEDED, temp.stderr.text
    assert temp.stdout.text.strip() in {"EROFS", "EBUSY"}
    script = workspace / "Database" / "temp_scripts" / f"{temp.execution_id}_selfdelete.py"
    assert hashlib.sha256(script.read_bytes()).hexdigest() == read_record(workspace, temp.execution_id)["script_sha256"]
    guard.verify(temp, before, host)


def test_extra_case_name_with_colon_and_comma_mounts_only_that_case(guard: Guard, workspace: Path) -> None:
    """A case named with `:` and `,` is mounted as exactly that folder (mounts are structured, not strings)."""
    name = "Smith, J: MVA,ro 2024"
    (workspace / "projects" / name).mkdir()
    if os.geteuid() == 0:
        os.chown(workspace / "projects" / name, 1000, 1000)
    result = guard.run("import os\nopen('w.txt', 'w').write('ok')\nprint(os.listdir('/workspace/projects'))\n",
                       case=name)
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert json.loads(result.stdout.text.replace("'", '"')) == [name]
    assert (workspace / "projects" / name / "w.txt").read_text() == "ok"


def test_extra_no_privilege_tricks_inside(guard: Guard) -> None:
    """Mounting, new user namespaces and chroot are all refused inside a run."""
    result = guard.run("""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), errno.errorcode[ctypes.get_errno()])
print('unshare', libc.unshare(0x10000000), errno.errorcode[ctypes.get_errno()])
try:
    os.chroot('/tmp'); print('chroot OK')
except OSError as e:
    print('chroot', errno.errorcode[e.errno])
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.stdout.text.splitlines() == ["mount -1 EPERM", "unshare -1 EPERM", "chroot EPERM"]
