"""`scoperun serve`'s queue on the real engine, through real HTTP: positions, listings, cancel timing."""

from __future__ import annotations

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
from scoperun.service.tokens import TokenStore
from tests.conftest import CASE, OTHER_CASE
from tests.integration._adversarial import wait_until
from tests.integration.conftest import assert_no_containers_left, read_record, unavailable
from tests.service_helpers import serving, stopped_after

pytest.importorskip("fastapi")
ID_LABEL = "org.scoperun.execution-id"


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    """Two callers who may run (a and b) and a reader, made before the server starts."""
    store = TokenStore.from_settings(settings)
    return {name: store.create(name, role) for name, role in (("a", "run"), ("b", "run"), ("reader", "read"))}


@pytest.fixture
def one_slot(settings: Settings, workspace: Path, docker_client, tokens) -> Iterator[str]:
    """A real server with max_concurrent 1 on loopback; yields its URL; no container left afterwards."""
    from scoperun.service.app import create_app

    small = settings.model_copy(update={"max_concurrent": 1, "max_queue": 20})
    executor = Executor(small)
    with serving(create_app(small, executor, ping_interval=1.0)) as url:
        yield url
    executor.close()
    assert_no_containers_left(docker_client, workspace)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(url: str, token: str, script: str) -> str:
    r = httpx.post(f"{url}/v1/runs", headers=auth(token), json={"script": script, "case": CASE}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["execution_id"])


def view(url: str, token: str, execution_id: str) -> dict:
    r = httpx.get(f"{url}/v1/runs/{execution_id}", headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def read_stream(url: str, token: str, execution_id: str, *, after: int = 0) -> list[dict]:
    """A run's SSE events (from `after`) until `finished`, each parsed."""
    import httpx_sse

    got: list[dict] = []
    with httpx.Client(base_url=url, headers=auth(token), timeout=httpx.Timeout(10, read=120)) as http, \
            httpx_sse.connect_sse(http, "GET", f"/v1/runs/{execution_id}/events",
                                  headers={"Last-Event-ID": str(after)}) as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            if sse.event and sse.event != "message":
                got.append({"id": int(sse.id), "event": sse.event, "data": json.loads(sse.data)})
                if sse.event == "finished":
                    break
    return got


class Follower(threading.Thread):
    """Reads one run's stream on a thread from its first event, live, until `finished`."""

    def __init__(self, url: str, token: str, execution_id: str) -> None:
        super().__init__(daemon=True)
        self.args_ = (url, token, execution_id)
        self.events: list[dict] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.events = read_stream(*self.args_)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def result(self) -> list[dict]:
        self.join(180)
        assert not self.is_alive(), "the event stream did not end"
        assert self.error is None, self.error
        return self.events


def positions(events: list[dict]) -> list[int]:
    return [e["data"]["position"] for e in events if e["event"] == "queued"]


def containers_of(docker_client, execution_id: str, *, running_only: bool = False) -> list:
    """The run's containers: a fresh one carries its id as a label; a pooled one is renamed after it."""
    found = docker_client.containers.list(all=not running_only, sparse=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if (c.attrs.get("Labels") or {}).get(ID_LABEL) == execution_id
            or any(n.lstrip("/") == f"scoperun-{execution_id}" for n in c.attrs.get("Names") or [])]


def test_queued_runs_hear_their_position_until_they_start(one_slot: str, workspace: Path, docker_client,
                                                          tokens) -> None:
    """One slot: each waiting run gets a numbered `queued` event whenever its place changes (a run ahead
    starts or is cancelled, another caller's run is served fairly before it) and its places follow the order
    the runs actually start in; a reconnect mid-way repeats and misses nothing; a queued run never starts a
    container when cancelled."""
    url = one_slot
    (workspace / "Tools" / "long.py").write_text("import time\nprint('holding the slot', flush=True)\n"
                                                 "time.sleep(120)\n")
    seen: set[str] = set()
    stop = threading.Event()

    def sample() -> None:  # which runs ever had a container, sampled from the engine
        while not stop.is_set():
            for c in docker_client.containers.list(all=True, sparse=True, filters={"label": MANAGED_LABEL}):
                seen.add((c.attrs.get("Labels") or {}).get(ID_LABEL, ""))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    long = submit(url, tokens["a"], "Tools/long.py")
    assert wait_until(lambda: view(url, tokens["a"], long)["status"] == "running", timeout=60)
    a1, a2, a3 = (submit(url, tokens["a"], "Tools/hello.py") for _ in range(3))
    followers = {run: Follower(url, tokens["reader"], run) for run in (a2, a3)}  # live from the start
    for f in followers.values():
        f.start()
    b1 = submit(url, tokens["b"], "Tools/hello.py")  # another caller: served before a's second and third
    places = {run: view(url, tokens["reader"], run)["queue_position"] for run in (a1, b1, a2, a3)}
    assert places == {a1: 0, b1: 1, a2: 2, a3: 3}, places
    assert all(view(url, tokens["reader"], run)["status"] == "queued" for run in places)

    cancel = httpx.post(f"{url}/v1/runs/{a1}/cancel", headers=auth(tokens["a"]), timeout=30)
    assert cancel.status_code == 202, cancel.text
    # a1 is out: a's next run has a's turn again (a2, b1, a3).
    assert wait_until(lambda: view(url, tokens["reader"], a2)["queue_position"] == 0)
    assert view(url, tokens["reader"], b1)["queue_position"] == 1
    assert view(url, tokens["reader"], a3)["queue_position"] == 2
    assert httpx.post(f"{url}/v1/runs/{long}/cancel", headers=auth(tokens["a"]), timeout=30).status_code == 202

    a2_events, a3_events = followers[a2].result(), followers[a3].result()
    b1_events = read_stream(url, tokens["reader"], b1)
    for events in (a2_events, a3_events, b1_events):
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))  # numbered, none missing
        kinds = [e["event"] for e in events]
        first_start = kinds.index("started")
        assert set(kinds[:first_start]) == {"queued"} and "queued" not in kinds[first_start:]
        assert events[-1]["data"]["status"] == "succeeded", events[-1]["data"]["message"]
    # Each stream's places, in order: where it entered, the fair jump of b1, a1's cancel, each start ahead.
    assert positions(a2_events) == [1, 2, 0], a2_events
    assert positions(b1_events) == [1, 0], b1_events
    assert positions(a3_events) == [2, 3, 2, 1, 0], a3_events
    starts = {run: read_record(workspace, run)["started_at"] for run in (a2, b1, a3)}
    assert sorted(starts, key=starts.__getitem__) == [a2, b1, a3]  # the order the places promised

    # A reconnect after any event gets exactly the rest.
    for k in (1, 3, len(a3_events) - 1):
        assert read_stream(url, tokens["reader"], a3, after=k) == a3_events[k:]

    # The cancelled queued run: never had a container, ended `cancelled`, audited with who cancelled it.
    a1_events = read_stream(url, tokens["reader"], a1)
    assert [e["event"] for e in a1_events] == ["queued", "cancelling", "finished"]
    assert a1_events[1]["data"] == {"by": "a"} and a1_events[-1]["data"]["status"] == "cancelled"
    record = read_record(workspace, a1)
    assert record["status"] == "cancelled" and "cancelled by a before it started" in record["message"]
    stop.set()
    sampler.join()
    assert a1 not in seen and {long, a2, b1, a3} <= seen


def list_runs(url: str, token: str, **params) -> dict:
    r = httpx.get(f"{url}/v1/runs", headers=auth(token), params=params, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ids_of(page: dict) -> list[str]:
    return [r["execution_id"] for r in page["runs"]]


def test_run_listing_shows_queued_runs_filters_and_pages_without_repeats(one_slot: str, workspace: Path,
                                                                        tokens) -> None:
    """GET /v1/runs lists the server's queued and running runs with the index's, newest first; every filter
    applies to them (status=queued too); a cursor pages on without repeating a run that left the queue."""
    from datetime import UTC, datetime

    url = one_slot
    (workspace / "Tools" / "long.py").write_text("import time\nprint('holding the slot', flush=True)\n"
                                                 "time.sleep(120)\n")
    done = []
    for _ in range(2):
        r = httpx.post(f"{url}/v1/runs?wait=true", headers=auth(tokens["a"]), timeout=120,
                       json={"script": "Tools/hello.py", "case": CASE})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        done.append(r.json()["execution_id"])
    f1, f2 = done
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    long = submit(url, tokens["a"], "Tools/long.py")
    assert wait_until(lambda: view(url, tokens["a"], long)["status"] == "running", timeout=60)
    q1 = submit(url, tokens["a"], "Tools/hello.py")
    r = httpx.post(f"{url}/v1/runs", headers=auth(tokens["b"]), timeout=30,
                   json={"script": "Tools/hello.py", "case": OTHER_CASE})
    assert r.status_code == 202, r.text
    q2 = r.json()["execution_id"]
    q3 = submit(url, tokens["a"], "Tools/hello.py")

    everything = list_runs(url, tokens["reader"])
    assert ids_of(everything) == [q3, q2, q1, long, f2, f1] and everything["next_cursor"] is None
    rows = {r["execution_id"]: r for r in everything["runs"]}
    assert [rows[q]["status"] for q in (q1, q2, q3)] == ["queued"] * 3
    assert [rows[q]["queue_position"] for q in (q1, q2, q3)] == [0, 1, 2]
    assert rows[q2]["case_name"] == OTHER_CASE and rows[q2]["requested_by"] == "b" and rows[q2]["started"] is None
    assert rows[long]["status"] == "running" and rows[f1]["status"] == "succeeded"
    assert ids_of(list_runs(url, tokens["reader"], status="queued")) == [q3, q2, q1]
    assert ids_of(list_runs(url, tokens["reader"], status="running")) == [long]
    assert ids_of(list_runs(url, tokens["reader"], status="succeeded")) == [f2, f1]
    assert ids_of(list_runs(url, tokens["reader"], requested_by="b")) == [q2]
    assert ids_of(list_runs(url, tokens["reader"], case=OTHER_CASE)) == [q2]
    assert ids_of(list_runs(url, tokens["reader"], case=CASE, status="queued", requested_by="a")) == [q3, q1]
    assert ids_of(list_runs(url, tokens["reader"], since=between)) == [q3, q2, q1, long]
    epoch = str(datetime.fromisoformat(between).timestamp())
    assert ids_of(list_runs(url, tokens["reader"], since=epoch)) == [q3, q2, q1, long]
    assert ids_of(list_runs(url, tokens["reader"], since="1h")) == [q3, q2, q1, long, f2, f1]
    bad = httpx.get(f"{url}/v1/runs", headers=auth(tokens["reader"]), params={"since": "yesterday-ish"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid-request"
    queued_pages = [list_runs(url, tokens["reader"], status="queued", limit=2)]
    queued_pages.append(list_runs(url, tokens["reader"], status="queued", limit=2,
                                  cursor=queued_pages[0]["next_cursor"]))
    assert [ids_of(p) for p in queued_pages] == [[q3, q2], [q1]] and queued_pages[1]["next_cursor"] is None

    first = list_runs(url, tokens["reader"], limit=2)
    assert ids_of(first) == [q3, q2] and first["next_cursor"]
    # Between pages: q3 (shown) is cancelled and long too, so q1 starts; both leave the queue for the index.
    for run in (q3, long):
        assert httpx.post(f"{url}/v1/runs/{run}/cancel", headers=auth(tokens["a"]), timeout=30).status_code == 202
    assert wait_until(lambda: read_record(workspace, q3)["status"] == "cancelled", timeout=60)
    assert wait_until(lambda: view(url, tokens["reader"], q1)["status"] != "queued", timeout=60)
    pages, cursor = [first], first["next_cursor"]
    while cursor:
        pages.append(list_runs(url, tokens["reader"], limit=2, cursor=cursor))
        cursor = pages[-1]["next_cursor"]
    shown = [run for page in pages for run in ids_of(page)]
    assert len(shown) == len(set(shown)), shown  # nothing twice
    # The older runs follow in order; q1 began after the first page, so it went above the cursor (a fresh
    # listing shows it at the top, as it shows any run that started since; q2 too once it started).
    assert shown == [q3, q2, long, f2, f1], shown
    top = ids_of(list_runs(url, tokens["reader"], limit=4))
    assert set(top[:3]) == {q1, q2, q3} and top[3] == long, top
    assert httpx.post(f"{url}/v1/runs/{q2}/cancel", headers=auth(tokens["b"]), timeout=30).status_code in (202, 409)
    assert wait_until(lambda: list_runs(url, tokens["reader"], status="queued")["runs"] == [], timeout=120)


@pytest.fixture
def pooled_server(settings: Settings, workspace: Path, docker_client, tokens) -> Iterator[tuple[str, Executor]]:
    """A real server whose executor keeps a warm pool (root controller, launcher image); yields (URL, executor)."""
    import os

    from scoperun.service.app import create_app

    if os.geteuid() != 0:
        unavailable("pooled slots need root (host mounts)")
    if not (docker_client.images.get(settings.image).labels or {}).get("org.scoperun.launcher"):
        unavailable(f"{settings.image} has no launcher; rebuild it (`scoperun image build`)")
    warm = settings.model_copy(update={"pool": True, "pool_size": 1, "max_concurrent": 2})
    executor = Executor(warm)
    with serving(create_app(warm, executor, ping_interval=1.0)) as url:
        yield url, executor
    executor.close()
    assert_no_containers_left(docker_client, workspace)


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker` (a container's processes are host processes too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_cancel_stops_a_pooled_run_and_its_detached_children_within_a_second(pooled_server, workspace: Path,
                                                                             docker_client, tokens) -> None:
    """A run in a warm (pooled) container that started a child in its own session: on cancel the engine says
    the container stopped within 1 s of the request and no process of the run is left on the host."""
    url, executor = pooled_server
    marker = "297.125"  # a sleep no other process on this machine runs
    (workspace / "Tools" / "escape.py").write_text(
        "import subprocess, time\n"
        f"child = subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "print('child', child.pid, flush=True)\ntime.sleep(120)\n")
    warmup = httpx.post(f"{url}/v1/runs?wait=true", headers=auth(tokens["a"]), timeout=120,
                        json={"script": "Tools/hello.py", "case": CASE})
    assert warmup.status_code == 200, warmup.text
    pool = executor.backend.pool
    assert pool is not None and wait_until(lambda: pool.idle_count() > 0, timeout=60), "no warm container"
    run = submit(url, tokens["a"], "Tools/escape.py")
    assert wait_until(lambda: any(e["event"] == "stdout" for e in read_until_output(url, tokens["a"], run)),
                      timeout=60)
    assert wait_until(lambda: containers_of(docker_client, run, running_only=True), timeout=30)
    (container,) = containers_of(docker_client, run, running_only=True)
    assert (container.attrs.get("Labels") or {}).get("org.scoperun.pool"), "the run did not get the warm container"
    assert host_processes_with(marker), "the detached child is not running"
    t0 = time.monotonic()
    cancel = httpx.post(f"{url}/v1/runs/{run}/cancel", headers=auth(tokens["a"]), timeout=30)
    answered = time.monotonic() - t0
    assert cancel.status_code == 202, cancel.text
    stopped = stopped_after(docker_client, container.id, t0)
    print(f"pooled: cancel answered after {answered:.3f} s; container stopped {stopped:.3f} s after the request")
    assert stopped < 1.0, (f"the pooled container was still running {stopped:.3f} s after the cancel request "
                           f"(answered after {answered:.3f} s); the issue asks for 1 s")
    assert wait_until(lambda: not host_processes_with(marker), timeout=5), "the detached child outlived the cancel"
    events = read_stream(url, tokens["reader"], run)
    result = events[-1]["data"]
    assert result["status"] == "cancelled" and result["pooled"] is True, result
    record = read_record(workspace, run)
    assert record["status"] == "cancelled" and "cancelled by a" in record["message"]


def read_until_output(url: str, token: str, execution_id: str) -> list[dict]:
    """The run's SSE events from the first, read until its first output (or its end)."""
    import httpx_sse

    got: list[dict] = []
    with httpx.Client(base_url=url, headers=auth(token), timeout=httpx.Timeout(10, read=60)) as http, \
            httpx_sse.connect_sse(http, "GET", f"/v1/runs/{execution_id}/events") as source:
        for sse in source.iter_sse():
            if sse.event and sse.event != "message":
                got.append({"id": int(sse.id), "event": sse.event, "data": json.loads(sse.data)})
                if sse.event in ("stdout", "finished"):
                    break
    return got


def test_a_run_cancelled_while_it_starts_never_keeps_running(one_slot: str, workspace: Path, docker_client,
                                                            tokens) -> None:
    """Cancelled right after it got its slot (its container not made yet): whenever the engine shows its
    container, it stops within 1 s of appearing, and the record ends `cancelled` by the caller."""
    url = one_slot
    (workspace / "Tools" / "long.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    run = submit(url, tokens["a"], "Tools/long.py")
    t0 = time.monotonic()
    cancel = httpx.post(f"{url}/v1/runs/{run}/cancel", headers=auth(tokens["a"]), timeout=30)
    assert cancel.status_code == 202, cancel.text
    first_seen: float | None = None
    longest = 0.0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = containers_of(docker_client, run, running_only=True)
        now = time.monotonic()
        if running:
            first_seen = first_seen if first_seen is not None else now
            longest = now - first_seen
        if view(url, tokens["a"], run)["status"] not in ("queued", "running") and not running:
            break
        time.sleep(0.02)
    seen = "never seen running" if first_seen is None else f"seen running for {longest:.3f} s"
    print(f"cancelled {time.monotonic() - t0:.3f} s ago; its container was {seen}")
    assert longest < 1.0, f"the cancelled run's container ran for {longest:.3f} s"
    kinds = [e["event"] for e in read_stream(url, tokens["reader"], run)]
    assert kinds[:3] == ["queued", "started", "cancelling"] and kinds[-1] == "finished", kinds  # after its slot
    record = read_record(workspace, run)
    assert record["status"] == "cancelled" and "cancelled by a" in record["message"], record["message"]
