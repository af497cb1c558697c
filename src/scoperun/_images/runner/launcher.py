"""scoperun's PID 1 in a run's container: waits for one request on stdin, runs it, reports how it ended.

The request is one JSON line: {"argv": [...], "env": {...}, "cwd": "...", "timeout": s, "tag": "<hex>"}.
It carries the run's secrets, so they never enter the container's configuration (`docker inspect`).
The launcher makes itself non-dumpable first (the script, same uid, can then neither read its
memory, environment or file descriptors through /proc nor ptrace it) and leaves every signal at its
default (as a namespace's init, it then receives none from the script). The script runs as a child
in its own process group with /dev/null as stdin; when it ends, or at the timeout, the whole group
is killed, then every other process of the container (so nothing writes to the case after the end
line), and stdout and stderr each end with `<tag>{"code": N, "how": "..."}` and a newline. The
tag is random per run and known only to the host, so the script cannot forge that line. Then the
launcher exits, which ends the container and everything left in it; with "linger" in the request,
it first waits up to that many seconds for stdin's EOF (the host ends used containers together,
when no run needs the cores), reading and obeying nothing more.
"""

import ctypes
import json
import os
import select
import signal
import sys
import time

PR_SET_DUMPABLE = 4
MAX_REQUEST = 4 * 1024 * 1024


def _non_dumpable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _read_request(idle: float) -> dict | None:
    """One line from stdin; None on EOF or when nobody asked within `idle` seconds."""
    data = bytearray()
    deadline = time.monotonic() + idle
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([0], [], [], left)[0]:
            return None
        chunk = os.read(0, 65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_REQUEST:
            return None
    return json.loads(bytes(data).split(b"\n", 1)[0])


def _oom_kills() -> int | None:
    """The container's OOM-kill count (cgroup v1 or v2), so an OOM kill is reported as such."""
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as fh:
                for line in fh:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def _end(tag: str, code: int, how: str, oom_known: bool = True) -> None:
    line = (tag + json.dumps({"code": code, "how": how, "oom_known": oom_known}) + "\n").encode()
    for fd in (1, 2):
        try:
            os.write(fd, line)
        except OSError:
            pass


def _spawn(req: dict) -> int:
    pid = os.fork()
    if pid == 0:  # the child: its own process group, no stdin, the request's folder and environment
        try:
            os.setpgid(0, 0)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.chdir(req["cwd"])
            os.execvpe(req["argv"][0], req["argv"], {**os.environ, **req["env"]})
        except BaseException as exc:  # noqa: BLE001 - nothing may escape the child but its exit
            try:
                os.write(2, f"scoperun: cannot start {req['argv'][0]!r}: {exc}\n".encode())
            finally:
                os._exit(127)
    try:
        os.setpgid(pid, pid)  # also from here: no race with the child's own call
    except OSError:
        pass
    return pid


def _wait(pid: int, timeout: float) -> tuple[int, str]:
    """(exit code, how) of the child: exited, signaled, or timeout (then it is killed)."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return 137, "timeout"
        if fd is not None:
            select.select([fd], [], [], left)
        else:
            time.sleep(min(left, 0.005))
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), "signaled"
    return os.WEXITSTATUS(status), "exited"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _end_everything_else() -> None:
    """Kill every other process of the container (as its init, kill(-1) spares only us) and reap
    them all: once this returns, nothing in the container can still write to the case."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def main() -> int:
    _non_dumpable()
    os.chdir("/")  # hold nothing of the case open
    # Python sets SIGINT to raise KeyboardInterrupt; as init, a handled signal would be the one kind
    # the script could send us. Default everything we can.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    idle = float(sys.argv[1]) if len(sys.argv) > 1 else 3600.0
    try:
        req = _read_request(idle)
    except ValueError:
        return 2
    if req is None:
        return 0
    tag = str(req["tag"])
    ooms = _oom_kills()
    try:
        pid = _spawn(req)
    except OSError as exc:
        os.write(2, f"scoperun: cannot start the run: {exc}\n".encode())
        _end(tag, 127, "error")
        return 127
    code, how = _wait(pid, float(req["timeout"]))
    if how == "signaled" and ooms is not None and (_oom_kills() or 0) > ooms:
        how = "oom"
    _kill_group(pid)  # what the script left running in its group ends with it at once
    if os.getpid() == 1:
        _end_everything_else()  # and so does what left the group (setsid), before the end line
    _end(tag, code, how, ooms is not None)
    _linger(float(req.get("linger") or 0))
    return 0


def _linger(seconds: float) -> None:
    """Wait (at most `seconds`) for stdin's EOF: the host ends a used container when no run needs
    the cores. Nothing read here is obeyed: a container serves exactly one request."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([0], [], [], left)[0]:
            return
        try:
            if not os.read(0, 65536):
                return
        except OSError:
            return


if __name__ == "__main__":
    sys.exit(main())
