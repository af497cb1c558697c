"""Tool names, descriptions and argument schemas, written for the model that reads them.

Shared by the LangChain and MCP adapters so both describe the tools in the same words.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DESCRIPTIONS",
    "FILE_ARGS",
    "BrowserAutomationArgs",
    "CustomScriptArgs",
    "MonitorArgs",
    "ScriptOnFilesystemArgs",
    "field_description",
]

DESCRIPTIONS: dict[str, str] = {
    "execute_script_on_filesystem": (
        "Run one of the firm's existing scripts from the Tools/ folder on the real files of one case. "
        "The script runs in a fresh, isolated container that sees only that case's folder (read-write, "
        "as its working directory) and Tools/ (read-only); changes it makes to the case's files are kept. "
        ".py scripts run with python, .sh scripts with bash. Returns markdown: status, exit code, the "
        "script's output (first 2,000 characters) and errors (last 1,000), and the audit record's path.\n"
        'Example: execute_script_on_filesystem(script_name="create_file_inventory.py", '
        'case_name="Abby-Sitgraves-MVA-7-13-2024", script_args=["--format", "json", "--output", "inventory.json"])'
    ),
    "execute_custom_script": (
        "Write a Python script you composed yourself and run it on the real files of one case. The code "
        "is saved under Database/temp_scripts/ with a unique name (never overwriting another run's "
        "script) and runs in a fresh, isolated container whose working directory is the case folder "
        "(relative paths are inside the case; nothing else of the workspace is visible). Files it writes "
        "in the case are kept. Print what you want to read back. Returns the same markdown as "
        "execute_script_on_filesystem.\n"
        'Example: execute_custom_script(script_content="import os\\nprint(sorted(os.listdir(\'.\')))", '
        'case_name="Abby-Sitgraves-MVA-7-13-2024")'
    ),
    "monitor_script_executions": (
        "Show recent script execution activity and statistics from the audit trail: how many runs "
        "succeeded, failed, timed out or were rejected, the success rate, durations, and the latest "
        "runs with their execution ids. Takes no arguments.\nExample: monitor_script_executions()"
    ),
    "execute_browser_automation": (
        "Open a web page in a headless browser inside an isolated container and perform a list of "
        "declarative steps (never code), e.g. fill a form, click, wait, extract text, take a "
        "screenshot. Screenshots and downloads are saved in the case folder. Returns markdown: the "
        "final URL and title, what was extracted, the files saved, and which step failed, if one did.\n"
        'Example: execute_browser_automation(url="https://example.com/records", actions=[...steps as '
        'described by the `actions` schema...], case_name="Abby-Sitgraves-MVA-7-13-2024")'
    ),
}

_LIMITS = " Scoped to one case: paths are relative to the case folder; '..', absolute paths and symlinks are refused."
DESCRIPTIONS.update({
    "list_cases": (
        "List the case folders of the workspace (use this first when you do not know the exact case name). "
        "Returns a markdown table: case name, number of files, total size, last modification date and the "
        "last script run with its status. Pass a prefix (case-insensitive), e.g. a client's surname, to "
        "narrow it; at most 200 cases are shown.\nExample: list_cases(prefix=\"Doe\")"
    ),
    "list_files": (
        "List the files and folders of one case (or a subfolder), with sizes and dates, sorted by name. "
        "At most 200 entries per call: when more exist the reply gives the offset for the next call. "
        "recursive=true lists subfolders too (down to 32 levels); pattern filters names, e.g. \"*.pdf\". "
        "Symlinks are shown, never followed." + _LIMITS + "\n"
        'Example: list_files(case_name="Abby-Sitgraves-MVA-7-13-2024", path="Medical Records", pattern="*.pdf")'
    ),
    "read_file": (
        "Read a plain-text file (.txt, .csv, .md, .json, ...) of one case. Returns up to 20,000 bytes from "
        "`offset`; when the file is longer the reply says TRUNCATED and gives the offset of the next part. "
        "PDF, Word, Excel and images are refused as binary: use read_document for them." + _LIMITS + "\n"
        'Example: read_file(case_name="Abby-Sitgraves-MVA-7-13-2024", path="client_intake.txt")'
    ),
    "read_document": (
        "Read the text of a document of one case: PDF (with '--- page N ---' markers), Word .docx, Excel "
        ".xlsx ('--- sheet NAME ---' markers, rows tab-separated), CSV, or an image's format and size. "
        "The document is parsed inside an isolated container; the first 20,000 characters are shown "
        "(the reply says TRUNCATED when there is more). Scanned PDFs without a text layer give no text."
        + _LIMITS + "\n"
        'Example: read_document(case_name="Abby-Sitgraves-MVA-7-13-2024", path="Medical Records/MRI_report.pdf")'
    ),
    "search_files": (
        "Search one case for a phrase (case-insensitive, literal) in its text files and in the text of its "
        "PDF, Word and Excel documents. Returns up to 50 matches, each with the file, the page (documents) "
        "and line, and a snippet. glob limits the files searched, e.g. \"*.pdf\" or \"Medical Records/*\"."
        + _LIMITS + "\n"
        'Example: search_files(case_name="Abby-Sitgraves-MVA-7-13-2024", query="date of injury")'
    ),
    "write_file": (
        "Write a text file into one case (a new file, or replacing a file's whole content; parent folders "
        "are created). The write is staged as a change set: depending on the workspace's policy it is "
        "applied at once (a person can undo it) or held for a person's review; the reply says which. "
        "Never writes through symlinks." + _LIMITS + "\n"
        'Example: write_file(case_name="Abby-Sitgraves-MVA-7-13-2024", path="notes/summary.md", '
        'content="# Summary\\n...")'
    ),
})

_CASE = (
    "The case folder name under projects/, exactly as it appears there, e.g. "
    "\"Caryn-McCay-MVA-7-30-2023\". One folder name: no slashes, no '..'."
)


class ScriptOnFilesystemArgs(BaseModel):
    """Arguments of execute_script_on_filesystem."""

    model_config = ConfigDict(extra="forbid")

    script_name: str = Field(description=(
        "File name of the script inside Tools/, e.g. \"create_file_inventory.py\" or "
        "\"organize_medical_subfolders.sh\". A subfolder of Tools/ is allowed (\"medical/sort.py\"); "
        "paths leaving Tools/ are refused."))
    case_name: str = Field(description=_CASE)
    script_args: list[str] | None = Field(None, description=(
        "Command-line arguments for the script, one list item per argument, e.g. "
        "[\"--format\", \"json\", \"--output\", \"inventory.json\"]. Omit for none."))
    working_dir: str | None = Field(None, description=(
        "Subfolder of the case to run in, e.g. \"medical\" (default: the case folder itself). "
        "\"projects/<case_name>/medical\" is accepted too. It must stay inside the case."))


class CustomScriptArgs(BaseModel):
    """Arguments of execute_custom_script."""

    model_config = ConfigDict(extra="forbid")

    script_content: str = Field(description=(
        "The complete Python source to run (Python 3.11, standard library plus pandas, openpyxl, "
        "pypdf, python-docx, requests, beautifulsoup4 and lxml). Its working directory is the case folder."))
    case_name: str = Field(description=_CASE)
    script_name: str = Field("temp_script.py", description=(
        "A short readable file name for the saved script, e.g. \"rename_bills.py\"; the end (.py, or .sh "
        "for a bash script) picks the interpreter. scoperun prefixes it with the execution id, so the "
        "name never collides with another run's."))


class MonitorArgs(BaseModel):
    """monitor_script_executions takes no arguments."""

    model_config = ConfigDict(extra="forbid")


class BrowserAutomationArgs(BaseModel):
    """Arguments of execute_browser_automation (the actions' own schema comes from scoperun.browser)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="The http(s) URL to open first, e.g. \"https://example.com/login\".")
    actions: list[dict[str, Any]] = Field(description=(
        "The steps to perform in order, each one object as this schema describes (declarative data, "
        "never code). An empty list just opens the page."))
    case_name: str = Field(description=_CASE + " Screenshots and downloads are saved in this case.")
    save_screenshots: bool = Field(True, description="Save a screenshot of the final page in the case folder.")


def field_description(model: type[BaseModel], name: str) -> str:
    """The description of one argument (so the MCP adapter reuses the same words)."""
    return model.model_fields[name].description or ""


class ListCasesArgs(BaseModel):
    """Arguments of list_cases."""

    model_config = ConfigDict(extra="forbid")

    prefix: str | None = Field(None, description=(
        "Only cases whose name starts with this (case-insensitive), e.g. \"Doe\". Omit to list all."))


class ListFilesArgs(BaseModel):
    """Arguments of list_files."""

    model_config = ConfigDict(extra="forbid")

    case_name: str = Field(description=_CASE)
    path: str = Field(".", description="Folder inside the case, e.g. \"Medical Records\" (default: the case itself).")
    pattern: str | None = Field(None, description="Only names matching this glob, e.g. \"*.pdf\" (case-insensitive).")
    recursive: bool = Field(False, description="Also list everything in subfolders.")
    offset: int = Field(0, ge=0, description="Skip this many entries (from the previous reply's 'call again').")


class ReadFileArgs(BaseModel):
    """Arguments of read_file."""

    model_config = ConfigDict(extra="forbid")

    case_name: str = Field(description=_CASE)
    path: str = Field(description="File inside the case, e.g. \"Medical Records/PT_notes_week2.txt\".")
    offset: int = Field(0, ge=0, description="Byte to start from (from the previous reply's TRUNCATED note).")


class ReadDocumentArgs(BaseModel):
    """Arguments of read_document."""

    model_config = ConfigDict(extra="forbid")

    case_name: str = Field(description=_CASE)
    path: str = Field(description="Document inside the case, e.g. \"Police Report/police_report_2025-01-15.pdf\".")


class SearchFilesArgs(BaseModel):
    """Arguments of search_files."""

    model_config = ConfigDict(extra="forbid")

    case_name: str = Field(description=_CASE)
    query: str = Field(description="The phrase to find (1 to 500 characters; case-insensitive, not a regex).")
    glob: str | None = Field(None, description="Only files matching this, e.g. \"*.pdf\" or \"Medical Records/*\".")


class WriteFileArgs(BaseModel):
    """Arguments of write_file."""

    model_config = ConfigDict(extra="forbid")

    case_name: str = Field(description=_CASE)
    path: str = Field(description="File to write inside the case, e.g. \"notes/summary.md\".")
    content: str = Field(description="The file's complete new text (UTF-8).")


FILE_ARGS: dict[str, type[BaseModel]] = {
    "list_cases": ListCasesArgs,
    "list_files": ListFilesArgs,
    "read_file": ReadFileArgs,
    "read_document": ReadDocumentArgs,
    "search_files": SearchFilesArgs,
    "write_file": WriteFileArgs,
}
