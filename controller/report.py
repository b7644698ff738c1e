"""The cycle report as people and programs read it: an aligned table, or one JSON object per line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson

from controller.pruning import DISPOSALS, CycleReport, ErrorRecord, RepositoryReport


def to_json(report: CycleReport) -> str:
    """The whole report on one line (a service prints one per cycle: one object per line, as
    log shippers and `jq` read them); dataclasses and datetimes serialise as they are, except
    the error records: `errors` stays a list of messages and `error_codes` lists the
    `[operation, code]` of each, in the same order (the format the report has always had)."""
    document = orjson.loads(orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS))
    document["ok"] = report.ok
    document["expired"] = report.expired
    _flatten_errors(document, report.errors)
    for repository, repo_document in zip(
        report.repositories, document["repositories"], strict=True
    ):
        _flatten_errors(repo_document, repository.errors)
    return orjson.dumps(document).decode()


def _flatten_errors(document: dict[str, Any], errors: Sequence[ErrorRecord]) -> None:
    document["errors"] = [e.message for e in errors]
    document["error_codes"] = [[e.operation, e.code] for e in errors]


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def to_table(report: CycleReport) -> str:
    done = DISPOSALS[report.disposal].done
    verb = f"WOULD-{report.disposal.upper()}" if report.dry_run else done.upper()
    lines = [
        f"cycle at {report.started_at.isoformat()}"
        + (" (dry-run: nothing was deleted)" if report.dry_run else ""),
    ]
    if report.refused:
        lines.append(f"REFUSED: {report.refused}")
    if report.stopped:
        unfinished = sum(r.stopped for r in report.repositories)
        lines.append(
            f"STOPPED: {report.stopped}; {unfinished} repositories not finished, "
            "what was done is below"
        )
    header = (
        "REPOSITORY",
        "BEFORE",
        "AFTER",
        verb,
        "PROTECTED",
        "HELD",
        "FAILED",
        "RECLAIMED",
        "STATUS",
    )
    rows = [header]
    for repo in report.repositories:
        rows.append(
            (
                repo.name,
                str(repo.images_before) if repo.listed else "-",
                str(repo.images_after) if repo.listed else "-",
                str(repo.deleted_count),
                str(sum(repo.protected.values())),
                str(repo.held_back),
                str(len(repo.failed)),
                human_bytes(repo.bytes_reclaimed),
                _status(repo),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    for repo in report.repositories:
        if repo.protected:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(repo.protected.items()))
            lines.append(f"{repo.name}: protected: {reasons}")
        for error in repo.errors:
            lines.append(f"{repo.name}: error: {error}")
        for failure in repo.failed:
            lines.append(f"{repo.name}: failed {failure.digest}: {failure.code} {failure.message}")
        expired = repo.expired
        if expired is not None:  # --delete-archived-after
            lines.append(
                f"{repo.name}: {expired.images_before} archived image(s), "
                f"{expired.deleted_count} {'would be ' if report.dry_run else ''}deleted from "
                f"the archive ({human_bytes(expired.bytes_reclaimed)}), "
                f"{sum(expired.protected.values())} kept, {expired.held_back} held back"
            )
            for failure in expired.failed:
                lines.append(
                    f"{repo.name}: failed {failure.digest} (archived): "
                    f"{failure.code} {failure.message}"
                )
    for error in report.errors:
        lines.append(f"error: {error}")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    if report.disposal == "archive":
        size = f"{'would move' if report.dry_run else 'moved'} to the archive storage class"
    else:
        size = "reclaimable" if report.dry_run else "reclaimed"
    lines.append(
        f"total: {report.deleted} image(s) {'would be ' if report.dry_run else ''}{done}, "
        f"{human_bytes(report.bytes_reclaimed)} {size}"
        + (
            f"; {report.expired} archived image(s) {'would be ' if report.dry_run else ''}"
            "deleted from the archive"
            if any(r.expired is not None for r in report.repositories)
            else ""
        )
    )
    return "\n".join(lines)


def _status(repo: RepositoryReport) -> str:
    if repo.stopped:
        return "stopped"
    if not repo.listed:
        return "error: not listed"
    if repo.ok:
        return "ok"
    return f"{len(repo.errors) + len(repo.failed)} problem(s)"


def render(report: CycleReport, output: Literal["table", "json"]) -> str:
    return to_json(report) if output == "json" else to_table(report)
