"""Adversarial suite, part 6: reaching for the kernel and the runtime (issue 11, item 13).

A run tries io_uring (a large, often-exploited kernel surface that Docker 20.10's default seccomp
profile still allows), new namespaces, the kernel keyring and ptrace; looks for setuid binaries in
the image; and `doctor` is asked about the runtime's known container escapes.
"""

from __future__ import annotations

from scoperun import Status
from scoperun.config import Settings
from scoperun.doctor import check_runc, run_checks
from tests.integration._adversarial import Guard
from tests.integration.conftest import unavailable

PROBE = """
import ctypes, errno, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, 'allowed' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), '?'))
params = ctypes.create_string_buffer(120)
call('io_uring_setup', 425, 8, ctypes.byref(params))
call('unshare_user', 272, 0x10000000)
call('unshare_net', 272, 0x40000000)
call('keyctl', 250, 0, 0)
call('ptrace_attach_1', 101, 16, 1, 0, 0)
call('userfaultfd', 323, 0)
t = threading.Thread(target=lambda: None); t.start(); t.join()
print('subprocess', subprocess.run(['echo', 'ok'], capture_output=True, text=True).stdout.strip())
"""


def test_i11_13a_io_uring_namespaces_keyring_and_ptrace_are_refused(guard: Guard) -> None:
    """The shipped seccomp profile refuses io_uring_setup, unshare, keyctl, ptrace and userfaultfd with EPERM,
    while threads and subprocesses (what scripts need) still work."""
    result = guard.run(PROBE)
    assert result.status is Status.SUCCEEDED, result.stderr.text
    seen = dict(line.split(" ", 1) for line in result.stdout.text.splitlines())
    for name in ("io_uring_setup", "unshare_user", "unshare_net", "keyctl", "ptrace_attach_1", "userfaultfd"):
        assert seen[name] == "EPERM", (name, seen)
    assert seen["subprocess"] == "ok"


def test_i11_13b_the_runner_image_has_no_setuid_or_setgid_binary(guard: Guard, docker_client) -> None:
    """No file of the runner image carries a setuid or setgid bit (su, passwd, mount... are stripped)."""
    steps = " ".join(h.get("CreatedBy", "") for h in docker_client.api.history(guard.executor.settings.image))
    if "-perm /6000" not in steps:
        unavailable(f"{guard.executor.settings.image} was built before its Dockerfile stripped setuid bits; "
                    f"rebuild it (`make image`)")
    result = guard.run("""
import os, stat
found = []
for top in ('/bin', '/sbin', '/usr', '/opt', '/lib', '/etc'):
    for root, dirs, files in os.walk(top):
        for name in files:
            try:
                mode = os.lstat(os.path.join(root, name)).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(os.path.join(root, name))
print(len(found), *found[:20])
""")
    assert result.status is Status.SUCCEEDED, result.stderr.text
    assert result.stdout.text.split()[0] == "0", result.stdout.text


def test_i11_13c_doctor_flags_a_runc_open_to_known_escapes(settings: Settings) -> None:
    """doctor fails a runc older than the CVE-2024-21626 fix, passes fixed ones, and checks this engine's runc."""
    assert not check_runc("1.1.11", backport_check=lambda *_: False).ok
    assert not check_runc("1.0.0-rc6", backport_check=lambda *_: False).ok  # CVE-2019-5736 too
    assert check_runc("1.1.12").ok and check_runc("1.2.3").ok
    [runc] = [c for c in run_checks(settings) if c.name == "runc"]
    assert "runc" in runc.detail and (runc.ok or "CVE-2024-21626" in runc.detail)
