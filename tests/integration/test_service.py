"""`scoperun serve` on the real engine, through real HTTP on loopback: live output, cancel, resume, auth."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scoperun.config import Settings
from scoperun.engine.base import MANAGED_LABEL
from scoperun.executor import Executor
from scoperun.models import ExecutionRequest
from scoperun.service.tokens import TokenStore
from tests.conftest import CASE
from tests.integration.conftest import assert_no_containers_left, read_record
from tests.service_helpers import serving, stopped_after

pytest.importorskip("fastapi")
ID_LABEL = "org.scoperun.execution-id"


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    """One token per role (and a second `run` caller), made before the server starts."""
    store = TokenStore.from_settings(settings)
    return {name: store.create(name, role) for name, role in
            (("reader", "read"), ("runner", "run"), ("other", "run"), ("boss", "admin"))}


@pytest.fixture
def server(settings: Settings, workspace: Path, docker_client, tokens) -> Iterator[str]:
    """A real app with a real Executor, served by uvicorn on a loopback port; yields its base URL."""
    from scoperun.service.app import create_app

    executor = Executor(settings)
    app = create_app(settings, executor, ping_interval=1.0)
    with serving(app) as url:
        yield url
    executor.close()
    assert_no_containers_left(docker_client, workspace)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_tool(workspace: Path, name: str, code: str) -> str:
    (workspace / "Tools" / name).write_text(code)
    return f"Tools/{name}"


def containers_of(docker_client, execution_id: str) -> list:
    found = docker_client.containers.list(all=True, sparse=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if (c.attrs.get("Labels") or {}).get(ID_LABEL) == execution_id]


def sse_events(url: str, token: str, execution_id: str, *, after: int = 0, stop_after: int | None = None,
               on_event=None) -> list[dict]:
    """Read a run's SSE stream (from `after`) until `finished` or `stop_after` events; parse each."""
    import httpx_sse

    got: list[dict] = []
    with httpx.Client(base_url=url, headers=auth(token), timeout=httpx.Timeout(10, read=60)) as http, \
            httpx_sse.connect_sse(http, "GET", f"/v1/runs/{execution_id}/events",
                                  headers={"Last-Event-ID": str(after)}) as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            if not sse.event or sse.event == "message":
                continue
            ev = {"id": int(sse.id), "event": sse.event, "data": json.loads(sse.data), "at": time.time()}
            got.append(ev)
            if on_event is not None:
                on_event(ev)
            if sse.event == "finished" or (stop_after is not None and len(got) >= stop_after):
                break
    return got


def test_live_output_reaches_the_client_before_the_next_line_is_printed(server: str, workspace: Path,
                                                                         tokens) -> None:
    """The script prints a line, then waits until the client has seen it (a file the test writes) before the next."""
    script = write_tool(workspace, "handshake.py", (
        "import os, time\n"
        "for i in range(3):\n"
        "    print(f'line {i} at {time.time()}', flush=True)\n"
        "    deadline = time.time() + 30\n"
        "    while not os.path.exists(f'seen-{i}') and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    if not os.path.exists(f'seen-{i}'):\n"
        "        print('the client never saw line', i, flush=True)\n"
        "        raise SystemExit(9)\n"))
    case_dir = workspace / "projects" / CASE
    r = httpx.post(f"{server}/v1/runs", headers=auth(tokens["runner"]),
                   json={"script": script, "case": CASE, "write_mode": "direct"})
    assert r.status_code == 202, r.text
    execution_id = r.json()["execution_id"]
    assert r.headers["location"] == f"/v1/runs/{execution_id}"
    printed: list[str] = []

    def acknowledge(ev: dict) -> None:
        if ev["event"] == "stdout":
            for line in ev["data"]["text"].splitlines():
                printed.append(line)
                (case_dir / f"seen-{line.split()[1]}").write_text("ok")

    events = sse_events(server, tokens["reader"], execution_id, on_event=acknowledge)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "finished"
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [p.split()[1] for p in printed] == ["0", "1", "2"]
    result = events[-1]["data"]
    assert result["status"] == "succeeded", result["message"]
    assert read_record(workspace, execution_id)["status"] == "succeeded"


def test_live_lines_every_half_second(server: str, workspace: Path, tokens) -> None:
    """A script printing a line every 0.5 s for 3 s: the client has line 1 before line 2 is printed."""
    script = write_tool(workspace, "ticks.py", "import time\nfor i in range(6):\n"
                        "    print(f'tick {i} {time.time()}', flush=True)\n    time.sleep(0.5)\n")
    r = httpx.post(f"{server}/v1/runs", headers=auth(tokens["runner"]), json={"script": script, "case": CASE})
    events = sse_events(server, tokens["runner"], r.json()["execution_id"])
    lines = [(line, e["at"]) for e in events if e["event"] == "stdout" for line in e["data"]["text"].splitlines()]
    assert len(lines) == 6
    first_received = lines[0][1]
    second_printed = float(lines[1][0].split()[2])
    print(f"line 1 received {second_printed - first_received:+.3f} s before line 2 was printed")
    assert first_received < second_printed


def test_cancel_kills_the_container_and_records_who(server: str, workspace: Path, docker_client, tokens) -> None:
    """POST /cancel: the engine says the container stopped within 1 s of the request (sampled), it is removed
    within seconds, the record says cancelled by the token."""
    script = write_tool(workspace, "sleepy.py", "import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    r = httpx.post(f"{server}/v1/runs", headers=auth(tokens["runner"]), json={"script": script, "case": CASE})
    execution_id = r.json()["execution_id"]
    sse_events(server, tokens["runner"], execution_id, on_event=None,
               stop_after=3)  # queued, started, stdout 'ready'
    (container,) = containers_of(docker_client, execution_id)
    assert docker_client.api.inspect_container(container.id)["State"]["Running"]
    other = httpx.post(f"{server}/v1/runs/{execution_id}/cancel", headers=auth(tokens["other"]))
    assert other.status_code == 403 and other.json()["code"] == "forbidden"
    t0 = time.monotonic()
    cancel = httpx.post(f"{server}/v1/runs/{execution_id}/cancel", headers=auth(tokens["runner"]))
    answered = time.monotonic() - t0
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling"
    stopped = stopped_after(docker_client, container.id, t0)
    print(f"cancel answered after {answered:.3f} s; container stopped {stopped:.3f} s after the request was sent")
    assert stopped < 1.0, (f"the container was still running {stopped:.3f} s after the cancel request "
                           f"(answered after {answered:.3f} s); the issue asks for 1 s")
    while containers_of(docker_client, execution_id) and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    gone_after = time.monotonic() - t0
    print(f"container gone {gone_after:.3f} s after the cancel request")
    assert not containers_of(docker_client, execution_id)
    assert gone_after < 5  # the goal is 1 s; timings here are noisy, the figure is printed above
    deadline = time.monotonic() + 30
    while read_record(workspace, execution_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    record = read_record(workspace, execution_id)
    assert record["status"] == "cancelled" and "runner" in record["message"]
    view = httpx.get(f"{server}/v1/runs/{execution_id}", headers=auth(tokens["reader"])).json()
    assert view["status"] == "cancelled"
    again = httpx.delete(f"{server}/v1/runs/{execution_id}", headers=auth(tokens["runner"]))
    assert again.status_code == 409 and again.json()["code"] == "run-finished"


def test_disconnect_does_not_cancel_and_resume_is_exact(server: str, workspace: Path, tokens) -> None:
    """A client that drops mid-run does not stop it; reconnecting with Last-Event-ID misses and repeats nothing."""
    script = write_tool(workspace, "count.py", "import time\nfor i in range(8):\n"
                        "    print(f'n={i}', flush=True)\n    time.sleep(0.3)\n")
    r = httpx.post(f"{server}/v1/runs", headers=auth(tokens["runner"]), json={"script": script, "case": CASE})
    execution_id = r.json()["execution_id"]
    first = sse_events(server, tokens["runner"], execution_id, stop_after=4)  # then the connection closes
    time.sleep(1.0)
    rest = sse_events(server, tokens["runner"], execution_id, after=first[-1]["id"])
    ids = [e["id"] for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))  # nothing missed, nothing repeated
    text = "".join(e["data"]["text"] for e in first + rest if e["event"] == "stdout")
    assert text == "".join(f"n={i}\n" for i in range(8))
    assert rest[-1]["event"] == "finished" and rest[-1]["data"]["status"] == "succeeded"
    replay = sse_events(server, tokens["reader"], execution_id, after=2)  # a finished run replays from disk
    assert [e["id"] for e in replay] == ids[2:]
    out = httpx.get(f"{server}/v1/runs/{execution_id}/output", headers=auth(tokens["reader"]),
                    params={"offset": 4})
    assert out.text == text[4:] and out.headers["x-run-finished"] == "true"


def test_role_matrix_on_runs_and_change_sets(server: str, workspace: Path, tokens) -> None:
    """read may list and read but not start; run starts; only admin applies; no token 401; revoked 401."""
    body = {"script": "Tools/hello.py", "case": CASE, "apply": "never"}
    assert httpx.post(f"{server}/v1/runs", json=body).status_code == 401
    denied = httpx.post(f"{server}/v1/runs", json=body, headers=auth(tokens["reader"]))
    assert denied.status_code == 403 and denied.json()["required_role"] == "run"
    done = httpx.post(f"{server}/v1/runs?wait=true", json=body, headers=auth(tokens["runner"]), timeout=120)
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    execution_id = done.json()["execution_id"]
    assert read_record(workspace, execution_id)["requested_by"] == "runner"
    listed = httpx.get(f"{server}/v1/runs", params={"case": CASE}, headers=auth(tokens["reader"])).json()
    assert execution_id in [r["execution_id"] for r in listed["runs"]]
    view = httpx.get(f"{server}/v1/changesets/{execution_id}", headers=auth(tokens["reader"]))
    assert view.status_code == 200
    apply = f"{server}/v1/changesets/{execution_id}/discard"
    assert httpx.post(apply, headers=auth(tokens["runner"])).status_code == 403
    ok = httpx.post(apply, headers=auth(tokens["boss"]))
    assert ok.status_code in (200, 409), ok.text  # 409: nothing staged (hello.py writes nothing)
    TokenStore.from_settings(Settings(workspace=workspace)).revoke("runner")
    assert httpx.post(f"{server}/v1/runs", json=body, headers=auth(tokens["runner"])).status_code == 401


def test_idempotency_key_never_runs_twice(server: str, workspace: Path, tokens) -> None:
    """The same POST sent three times with one Idempotency-Key makes one run; another body with it gets 422."""
    body = {"script": "Tools/hello.py", "case": CASE}
    headers = {**auth(tokens["runner"]), "Idempotency-Key": '"retry-me-1"'}
    ids = {httpx.post(f"{server}/v1/runs", json=body, headers=headers).json()["execution_id"] for _ in range(3)}
    assert len(ids) == 1
    other = httpx.post(f"{server}/v1/runs", json={**body, "args": ["x"]}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency-key-reused"
    (execution_id,) = ids
    sse_events(server, tokens["runner"], execution_id)
    records = [p.stem for p in (workspace / "Database" / "script_executions").glob("*.json")]
    assert records == [execution_id]


def test_queue_full_answers_429_with_retry_after(settings: Settings, workspace: Path, docker_client, tokens) -> None:
    """One slot and a queue of one: the third run gets 429 + Retry-After; cancelling the queued one needs no slot."""
    from scoperun.service.app import create_app

    small = settings.model_copy(update={"max_concurrent": 1, "max_queue": 1})
    executor = Executor(small)
    script = write_tool(workspace, "wait.py", "import time\nprint('in', flush=True)\ntime.sleep(60)\n")
    with serving(create_app(small, executor)) as url:
        ids = []
        for _ in range(2):
            r = httpx.post(f"{url}/v1/runs", json={"script": script, "case": CASE}, headers=auth(tokens["runner"]))
            assert r.status_code == 202, r.text
            ids.append(r.json()["execution_id"])
        full = httpx.post(f"{url}/v1/runs", json={"script": script, "case": CASE}, headers=auth(tokens["runner"]))
        assert full.status_code == 429 and full.json()["code"] == "queue-full"
        assert int(full.headers["retry-after"]) >= 1 and full.json()["queue_depth"] == 1
        queued = httpx.get(f"{url}/v1/runs/{ids[1]}", headers=auth(tokens["runner"])).json()
        assert queued["status"] == "queued" and queued["queue_position"] == 0
        for execution_id in reversed(ids):
            assert httpx.post(f"{url}/v1/runs/{execution_id}/cancel", headers=auth(tokens["runner"])).status_code == 202
        for execution_id in ids:
            events = sse_events(url, tokens["runner"], execution_id)
            assert events[-1]["data"]["status"] == "cancelled"
        assert "started" not in [e["event"] for e in sse_events(url, tokens["runner"], ids[1])]
    executor.close()
    assert_no_containers_left(docker_client, workspace)


def test_python_client_runs_streams_and_cancels(server: str, workspace: Path, docker_client, tokens) -> None:
    """scoperun.Client: run returns an ExecutionResult with live chunks; arun cancelled kills the run."""
    from scoperun import Client, ExecutionResult

    client = Client(server, tokens["runner"])
    chunks: list[tuple[str, str]] = []
    result = client.run(ExecutionRequest(script="Tools/hello.py", case=CASE),
                        on_output=lambda stream, text: chunks.append((stream, text)))
    assert isinstance(result, ExecutionResult) and result.status.value == "succeeded"
    assert ("stdout", f"hello from {CASE}\n") in chunks and ("stderr", "to stderr\n") in chunks
    coded = client.run_code("print(6 * 7)\n", case=CASE, script_name="answer.py")
    assert coded.stdout.text == "42\n" and coded.script.endswith("_answer.py")
    events = list(client.stream(ExecutionRequest(script="Tools/hello.sh", case=CASE)))
    assert events[-1].type == "finished" and events[-1].result.success

    script = write_tool(workspace, "forever.py", "import time\nprint('go', flush=True)\ntime.sleep(300)\n")

    async def cancel_midway() -> str:
        task = asyncio.ensure_future(client.arun(ExecutionRequest(script=script, case=CASE)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = httpx.get(f"{server}/v1/runs", params={"status": "running"},
                                headers=auth(tokens["reader"])).json()["runs"]
            if running:
                break
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running[0]["execution_id"]

    execution_id = asyncio.run(cancel_midway())
    deadline = time.monotonic() + 30
    while read_record(workspace, execution_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_record(workspace, execution_id)["status"] == "cancelled"
    assert not containers_of(docker_client, execution_id)
    client.close()


def test_load_never_exceeds_max_concurrent_and_loses_nothing(settings: Settings, workspace: Path, docker_client,
                                                             tokens) -> None:
    """20 clients send 200 small runs: each ends with a terminal record; the engine never holds more than
    max_concurrent of them at once (sampled); no 429 while the queue has room."""
    from scoperun.service.app import create_app

    loaded = settings.model_copy(update={"max_concurrent": 3, "max_queue": 200})
    executor = Executor(loaded)
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        while not stop.is_set():
            found = docker_client.containers.list(sparse=True, filters={"label": f"org.scoperun.workspace="
                                                                                f"{workspace.resolve()}"})
            peak[0] = max(peak[0], len(found))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    statuses: list[int] = []
    ids: list[str] = []
    lock = threading.Lock()
    with serving(create_app(loaded, executor)) as url:
        sampler.start()

        def client_thread(n: int) -> None:
            with httpx.Client(base_url=url, headers=auth(tokens["runner" if n % 2 else "other"]), timeout=60) as http:
                for _ in range(10):
                    r = http.post("/v1/runs", json={"script": "Tools/hello.py", "case": CASE, "write_mode": "read-only"})
                    with lock:
                        statuses.append(r.status_code)
                        if r.status_code == 202:
                            ids.append(r.json()["execution_id"])

        threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 600
        with httpx.Client(base_url=url, headers=auth(tokens["reader"]), timeout=30) as http:
            pending = set(ids)
            while pending and time.monotonic() < deadline:
                for execution_id in list(pending):
                    if http.get(f"/v1/runs/{execution_id}").json()["status"] not in ("queued", "running"):
                        pending.discard(execution_id)
                time.sleep(0.5)
        stop.set()
        sampler.join()
    executor.close()
    assert statuses.count(202) == 200, sorted(set(statuses))
    records = {execution_id: read_record(workspace, execution_id)["status"] for execution_id in ids}
    assert len(records) == 200 and set(records.values()) == {"succeeded"}
    print(f"peak containers sampled: {peak[0]} (max_concurrent 3)")
    assert 1 <= peak[0] <= 3
    assert_no_containers_left(docker_client, workspace)
