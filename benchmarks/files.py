"""Cases and files on a 60,000-file case: listing and search, against a naive walk of the same files.

Builds a workspace in a temporary folder with one case of N text files (600 folders) plus the
sample case's PDFs, then times, interleaved in one process and reported as medians with ratios:

- `cases()` answered from the cached count vs a full count of the case (what a naive listing does);
- `list_files` of one page (recursive, 200 entries) vs `os.walk` of the whole case;
- `list_files` with a pattern matching one file (walks all 60,000 entries);
- `search` for a phrase in one text file and one PDF (documents' text cached by content hash after the
  first search, which runs the extraction container: reported apart) vs a naive read-everything grep.

    .venv/bin/python benchmarks/files.py [-n 60000] [--repeat 5] [--no-documents]

--no-documents skips the PDFs (no engine needed). Uses the configured runner image (SCOPERUN_IMAGE).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scoperun.config import Settings
from scoperun.files import CaseFiles
from scoperun.sample import DEFAULT_CASE_NAME, create_sample_workspace

CASE = "Big-Case-MVA-2024"
WORDS = ["deposition", "exhibit", "invoice", "treatment", "physician", "billing", "correspondence", "settlement",
         "insurer", "statement", "witness", "medical", "record", "imaging", "report", "follow-up", "therapy"]


def build(root: Path, n: int, documents: bool) -> Path:
    """A workspace with the sample case and CASE of `n` small text files (and the sample's PDFs)."""
    create_sample_workspace(root, owner=None)
    case = root / "projects" / CASE
    per_folder = 100
    for i in range(n):
        folder = case / f"folder_{i // per_folder:04d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(60))
        (folder / f"note_{i:06d}.txt").write_text(f"note {i}\n{words}\n{words}\n")
    (case / f"folder_{(n // 100) // 2:04d}" / "note_needle.txt").write_text("line one\nthe unusual phrase kilimanjaro appears here\n")
    if documents:
        sample = root / "projects" / DEFAULT_CASE_NAME
        for pdf in sample.rglob("*.pdf"):
            shutil.copy(pdf, case / pdf.name)
    return case


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def naive_walk(case: Path) -> int:
    return sum(len(files) + len(dirs) for _, dirs, files in os.walk(case))


def naive_grep(case: Path, phrase: str) -> int:
    found = 0
    for folder, _, files in os.walk(case):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                found += phrase.encode() in fh.read().lower()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=60_000, help="text files in the big case")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (>= 3)")
    parser.add_argument("--no-documents", action="store_true", help="no PDFs (no container engine needed)")
    opts = parser.parse_args()
    documents = not opts.no_documents

    tmp = Path(tempfile.mkdtemp(prefix="scoperun-bench-files-"))
    try:
        ws = tmp / "ws"
        t = time.perf_counter()
        case = build(ws, opts.n, documents)
        generated = time.perf_counter() - t
        settings = Settings(workspace=ws, state_dir=tmp / "state", staging_dir=tmp / "staging", network="none")
        files = CaseFiles(settings=settings)

        cold_cases = timed(lambda: files.cases())  # counts both cases once, then caches
        first_search = timed(lambda: files.search(CASE, "kilimanjaro")) if documents else None
        rows: dict[str, list[float]] = {k: [] for k in (
            "cases (cached count)", "naive full count", "list page (200, recursive)", "naive os.walk",
            "list pattern (1 match of 60k)", "search (1 text + PDFs)", "naive grep")}
        hits = 0
        for _ in range(max(3, opts.repeat)):
            rows["cases (cached count)"].append(timed(lambda: files.cases()))
            rows["naive full count"].append(timed(lambda: naive_walk(case)))
            rows["list page (200, recursive)"].append(timed(lambda: files.list_files(CASE, recursive=True)))
            rows["naive os.walk"].append(timed(lambda: naive_walk(case)))
            rows["list pattern (1 match of 60k)"].append(
                timed(lambda: files.list_files(CASE, recursive=True, pattern="*needle*")))
            t = time.perf_counter()
            hits = len(files.search(CASE, "kilimanjaro").hits)
            rows["search (1 text + PDFs)"].append(time.perf_counter() - t)
            rows["naive grep"].append(timed(lambda: naive_grep(case, "kilimanjaro")))
        med = {k: statistics.median(v) for k, v in rows.items()}

        print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
        print(f"case: {opts.n:,} text files + {'the sample PDFs' if documents else 'no PDFs'} "
              f"(generated in {generated:.1f} s); {max(3, opts.repeat)} interleaved repetitions, medians")
        print(f"first cases() (counts every case once): {cold_cases * 1000:.0f} ms")
        if first_search is not None:
            print(f"first search (extracts the PDFs in one container run): {first_search * 1000:.0f} ms")
        for name, value in med.items():
            print(f"  {name:<32} {value * 1000:9.1f} ms")
        print(f"ratios: cases cached / naive count = {med['cases (cached count)'] / med['naive full count']:.3f}; "
              f"list page / os.walk = {med['list page (200, recursive)'] / med['naive os.walk']:.3f}; "
              f"search / naive grep = {med['search (1 text + PDFs)'] / med['naive grep']:.2f} "
              f"(search hits: {hits})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
