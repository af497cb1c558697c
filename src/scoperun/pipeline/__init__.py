"""The stages of one run, each a function with a typed input and output.

    RunContext.open -> prepare -> (slot) begin -> start -> wait -> finish
                           \\-> Refused -> refuse

`prepare` checks the scope, scans the script and builds the container's spec; nothing has run and
no record exists yet, so a refusal costs nothing. `begin` writes the 'running' record (a run that
cannot be audited does not start) and notes what the case holds. `start` has the backend start the
container and returns its handle; `wait` collects output until the container ends (live output and
cancellation plug in here, around the handle). `finish` judges the outcome, settles the changes,

The package follows the stages: `context` (what every stage knows), `preparation` (prepare),
`running` (begin, start, wait), `endings` (refuse, finish and the other endings), `records` (the
audit record each stage writes).
"""

from __future__ import annotations

from scoperun.pipeline.context import FixedProgram, RunContext, ScriptFacts, new_execution_id
from scoperun.pipeline.endings import cancelled_before_start, finish, finish_error, refuse
from scoperun.pipeline.preparation import Prepared, Refused, prepare
from scoperun.pipeline.records import write_record
from scoperun.pipeline.running import begin, start, wait

__all__ = [
    "FixedProgram",
    "Prepared",
    "Refused",
    "RunContext",
    "ScriptFacts",
    "begin",
    "cancelled_before_start",
    "finish",
    "finish_error",
    "new_execution_id",
    "prepare",
    "refuse",
    "start",
    "wait",
    "write_record",
]
