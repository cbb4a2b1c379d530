"""Expected issues written in a fixture's own header comments.

Each line ``# expect: SEVERITY LINE:COLUMN PATH :: MESSAGE`` names one issue the validator must
report for that file (PATH may be ``-`` for the document root). The whole set must match exactly:
no issue missing, none extra.
"""

from __future__ import annotations

import re
from pathlib import Path

from opsgate.spec.issues import Issue

_EXPECT = re.compile(
    r"^#\s*expect:\s*(?P<severity>error|warning)\s+(?P<line>\d+):(?P<column>\d+)\s+"
    r"(?P<path>\S+)\s+::\s+(?P<message>.+?)\s*$"
)

Expected = tuple[str, int, int, str, str]


def expected_issues(path: Path) -> list[Expected]:
    """The ``# expect:`` lines of a fixture, as (severity, line, column, path, message)."""
    found = []
    for text in path.read_text(encoding="utf-8").splitlines():
        match = _EXPECT.match(text.strip())
        if match is not None:
            issue_path = "" if match["path"] == "-" else match["path"]
            found.append(
                (
                    match["severity"],
                    int(match["line"]),
                    int(match["column"]),
                    issue_path,
                    match["message"],
                )
            )
    if not found:
        raise AssertionError(f"{path} has no '# expect:' lines")
    return sorted(found)


def actual_issues(issues: list[Issue]) -> list[Expected]:
    return sorted((str(i.severity), i.line, i.column, i.path, i.message) for i in issues)
