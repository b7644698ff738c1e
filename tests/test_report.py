"""The report as people and programs read it: the table's columns for every outcome, one JSON
object per line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from controller.images import Digest
from controller.policy import Reason
from controller.pruning import CycleReport, Deletion, ErrorRecord, RepositoryReport
from controller.report import to_json, to_table

STARTED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def report(
    *repos: RepositoryReport, stopped: str | None = None, warnings: list[str] | None = None
) -> CycleReport:
    return CycleReport(
        started_at=STARTED,
        dry_run=False,
        repositories=list(repos),
        finished_at=STARTED,
        stopped=stopped,
        warnings=warnings or [],
    )


def pruned(name: str, before: int, deleted: int, *, held: int = 0) -> RepositoryReport:
    repo = RepositoryReport(name, listed=True, finished=True, images_before=before, held_back=held)
    repo.deleted = [
        Deletion(Digest("sha256:" + f"{n:064x}"), (f"b{n}",), Reason.OVER_COUNT, 1024)
        for n in range(deleted)
    ]
    repo.deleted_count = deleted
    repo.images_after = before - deleted
    repo.bytes_reclaimed = 1024 * deleted
    return repo


def rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("REPOSITORY"))
    found = {}
    for line in lines[header:]:
        if line.startswith(("total:", "error:", "warning:")) or ": " in line.split("  ")[0]:
            break
        cells = line.split()
        found[cells[0]] = cells[1:]
    return found


def test_the_table_has_a_held_column() -> None:
    table = rows(to_table(report(pruned("app", 120, 20, held=30))))
    assert table["REPOSITORY"] == [
        "BEFORE",
        "AFTER",
        "DELETED",
        "PROTECTED",
        "HELD",
        "FAILED",
        "RECLAIMED",
        "STATUS",
    ]
    assert table["app"] == ["120", "100", "20", "0", "30", "0", "20.0", "KiB", "ok"]


def test_a_repository_that_failed_before_listing_shows_no_counts() -> None:
    # before: BEFORE 0 AFTER 0, as if the repository were empty
    failed = RepositoryReport(
        "broken",
        finished=True,
        errors=[
            ErrorRecord("DescribeImages", "ServerException", "DescribeImages: ServerException")
        ],
    )
    table = rows(to_table(report(failed, pruned("fine", 10, 0))))
    assert table["broken"] == ["-", "-", "0", "0", "0", "0", "0", "B", "error:", "not", "listed"]
    assert table["fine"][:2] == ["10", "10"]


def test_a_stopped_cycle_says_so_and_marks_what_did_not_finish() -> None:
    done = pruned("app", 310, 100, held=200)
    done.finished = False
    never = RepositoryReport("web")
    text = to_table(report(done, never, stopped="shutting down"))
    assert "STOPPED: shutting down; 2 repositories not finished, what was done is below" in text
    table = rows(text)
    assert table["app"][-1] == "stopped"
    assert table["app"][4] == "200"
    assert table["web"][:2] == ["-", "-"]


def test_warnings_are_listed() -> None:
    text = to_table(
        report(pruned("app", 1, 0), warnings=["-repos pattern 'x-*' matches no repository"])
    )
    assert "warning: -repos pattern 'x-*' matches no repository" in text.splitlines()


def test_json_is_one_object_on_one_line() -> None:
    # before: indented, many lines per cycle in service mode
    text = to_json(report(pruned("app", 120, 2), pruned("web", 5, 0)))
    assert "\n" not in text
    document = json.loads(text)
    assert document["ok"] is True
    assert [r["name"] for r in document["repositories"]] == ["app", "web"]
    assert document["repositories"][0]["held_back"] == 0
    assert document["repositories"][0]["listed"] is True


def test_json_errors_stay_messages_with_their_codes_alongside() -> None:
    """The one list of error records is written as the report always was: `errors` the
    messages, `error_codes` the [operation, code] of each. Before, the stop had no code."""
    stopped = pruned("app", 310, 100, held=200)
    stopped.stopped_by = "leadership lost"
    stopped.errors = [
        ErrorRecord("prune", "Stopped", "stopped before deleting 200 image(s): leadership lost")
    ]
    cycle = report(stopped)
    cycle.listed = True
    cycle.errors = [
        ErrorRecord("DescribeRepositories", "RepositoryNotFoundException", "not found: web")
    ]
    document = json.loads(to_json(cycle))
    (repo,) = document["repositories"]
    assert repo["errors"] == ["stopped before deleting 200 image(s): leadership lost"]
    assert repo["error_codes"] == [["prune", "Stopped"]]
    assert repo["bytes_reclaimed"] == 100 * 1024
    assert document["errors"] == ["not found: web"]
    assert document["error_codes"] == [["DescribeRepositories", "RepositoryNotFoundException"]]
    assert document["listed"] is True
    assert document["ok"] is False
