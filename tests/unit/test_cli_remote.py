"""The lean remote CLI path's pure parts: which command lines it takes, and JSON written as pydantic writes it."""

from __future__ import annotations

import random

import pytest
from pydantic import TypeAdapter

from scoperun.cli.remote import _body, _parse, dump_result


def test_results_are_dumped_as_pydantic_dumps_them() -> None:
    """Floats (small ones are written differently by pydantic), unicode and control characters: the same text."""
    rng = random.Random(7)
    floats = [1e-4, 1.5e-5, 1e-5, 9.9e-6, 1e-7, -5e-5, -1.5e-7, 1e16, 0.0, 2.5]
    floats += [rng.random() * 10 ** rng.randint(-12, 20) for _ in range(500)]
    data = {"durations": floats, "text": "é\u2028\x00\"/\\", "nested": [{"a": None, "b": True, "c": 3}], "empty": {}}
    assert dump_result(data) == TypeAdapter(object).dump_json(data, indent=2).decode()


@pytest.mark.parametrize("argv", [
    ["run-code", "-"],  # no --case: the full path says so
    ["run-code", "-", "--case", "A", "--timeout", "5"],  # an option the lean path does not take
    ["run-code", "-", "--case", "A", "--case", "B"],
    ["run-code", "-", "--case", "A", "--help"],
    ["run-code", "-", "--case", "--json"],
    ["run-code", "no-such-file.py", "--case", "A"],
    ["run", "--case", "A"],
    ["run-code", "-", "--case", "A", "--requested-by", "x" * 201],
])
def test_what_it_does_not_fully_understand_goes_to_the_full_path(argv: list[str]) -> None:
    """Unknown or repeated options, --help, a missing case or script, an invalid value: None (the full path)."""
    assert _parse(argv) is None


def test_the_request_is_the_clients() -> None:
    """The request holds what `Client.run_code` sends: fields away from their defaults, requested_by `cli`."""
    opts = _parse(["run", "Tools/x.py", "-c", "Doe", "--read-only", "--json", "a", "--", "--flag"])
    assert opts is not None and opts["json"] is True
    assert _body("run", opts) == {"script": "Tools/x.py", "case": "Doe", "args": ["a", "--flag"], "read_only": True,
                                  "requested_by": "cli"}
    opts = _parse(["run-code", "--case=Doe", "--name", "x.sh", "--requested-by", "agent-7"])
    assert opts is not None and opts["file"] == "-" and opts["name"] == "x.sh"
    assert _body("run-code", opts) == {"case": "Doe", "requested_by": "agent-7"}


def test_the_request_equals_what_the_client_builds_from_the_full_paths_fields() -> None:
    """Field for field and in order, the body is `Client.run_code`'s for the same command line."""
    from scoperun.models import ExecutionRequest, Limits

    opts = _parse(["run-code", "-", "--case", "Doe", "--read-only", "--working-dir", "notes", "--", "a"])
    assert opts is not None
    fields = {"case": "Doe", "limits": Limits(), "network": None, "read_only": True, "write_mode": None, "apply": None,
              "env": {}, "working_dir": "notes", "requested_by": "cli", "args": ["a"]}
    client_body = ExecutionRequest(script="-", **fields).model_dump(mode="json", exclude_defaults=True)
    client_body.pop("script")
    assert list(_body("run-code", opts).items()) == list(client_body.items())
