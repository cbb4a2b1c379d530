"""YAML documents with the line and column of every node, for located validation issues.

ruamel.yaml's round-trip loader keeps positions (YAML 1.2, so ``yes`` stays a string and
duplicate keys are errors). The loaded tree is converted once into plain ``dict``/``list``
values plus an index from path to position, so validation code never sees ruamel types.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from opsgate.spec.issues import Issue, Path, PathPart, Severity, format_path

Position = tuple[int, int]  # 1-based line and column

#: Nesting deeper than this is refused: no blueprint needs it, and it guards recursion.
MAX_DEPTH = 64


@dataclass(slots=True)
class Document:
    """A parsed YAML document: plain data plus the position of each mapping key and item."""

    file: str
    data: Any
    positions: dict[Path, Position] = field(default_factory=dict)
    #: For a document rewritten from another format (the seed format): path in ``data`` →
    #: path as written in the file. Issues are reported at the written path.
    aliases: dict[Path, Path] = field(default_factory=dict)

    def locate(self, path: Path) -> Position:
        """The position of ``path``, or of its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(tuple(path[:end]))
            if found is not None:
                return found
        return (1, 1)

    def origin(self, path: Path) -> Path:
        """Where ``path`` was written in the file: its longest aliased prefix, translated."""
        for end in range(len(path), -1, -1):
            written = self.aliases.get(tuple(path[:end]))
            if written is not None:
                return (*written, *path[end:])
        return path

    def issue(
        self,
        path: Path,
        message: str,
        hint: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> Issue:
        """An issue located at ``path`` in this document."""
        path = self.origin(path)
        line, column = self.locate(path)
        return Issue(severity, message, self.file, line, column, format_path(path), hint)


class YAMLSyntaxError(Exception):
    """The text is not a YAML document we can load; carries the located issue."""

    def __init__(self, issue: Issue) -> None:
        self.issue = issue
        super().__init__(str(issue))


def parse_yaml(text: str, file: str) -> Document:
    """Parse one YAML document; raise :class:`YAMLSyntaxError` with a located issue."""
    yaml = YAML(typ="rt", pure=True)
    try:
        tree = yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise YAMLSyntaxError(
            Issue(
                Severity.ERROR,
                f"YAML syntax error: {problem}",
                file,
                line,
                column,
                hint=_syntax_hint(problem),
            )
        ) from exc
    except (YAMLError, ValueError, TypeError) as exc:
        raise YAMLSyntaxError(
            Issue(Severity.ERROR, f"YAML syntax error: {exc}", file, 1, 1)
        ) from exc
    document = Document(file=file, data=None, positions={(): (1, 1)})
    document.data = _plain(tree, (), document, 0, set())
    return document


def _syntax_hint(problem: str) -> str | None:
    if "duplicate key" in problem:
        return "each key may appear once in a mapping; remove or rename the repeated one"
    if "tab" in problem:
        return "indent YAML with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "quote values that contain ': ' or fix the indentation"
    return None


def _plain(node: Any, path: Path, document: Document, depth: int, active: set[int]) -> Any:
    """Convert ruamel nodes to plain values, recording positions; refuse cycles and depth."""
    if depth > MAX_DEPTH:
        raise YAMLSyntaxError(
            document.issue(path, f"document nests deeper than {MAX_DEPTH} levels")
        )
    if isinstance(node, CommentedMap | CommentedSeq):
        if id(node) in active:
            raise YAMLSyntaxError(
                document.issue(
                    path,
                    "recursive YAML alias: a node contains itself",
                    hint="anchors (&) may be reused with aliases (*), not nested in themselves",
                )
            )
        active.add(id(node))
        try:
            return _container(node, path, document, depth, active)
        finally:
            active.discard(id(node))
    return _scalar(node)


def _container(
    node: CommentedMap | CommentedSeq, path: Path, document: Document, depth: int, active: set[int]
) -> Any:
    if isinstance(node, CommentedMap):
        result: dict[Any, Any] = {}
        for key, value in node.items():
            plain_key = (
                _scalar(key) if not isinstance(key, CommentedMap | CommentedSeq) else str(key)
            )
            child: Path = (*path, path_part(plain_key))
            _record(document, child, partial(node.lc.key, key))
            result[plain_key if _hashable(plain_key) else str(plain_key)] = _plain(
                value, child, document, depth + 1, active
            )
        return result
    items: list[Any] = []
    for index, value in enumerate(node):
        child = (*path, index)
        _record(document, child, partial(node.lc.item, index))
        items.append(_plain(value, child, document, depth + 1, active))
    return items


def _record(document: Document, path: Path, where: Callable[[], tuple[int, int]]) -> None:
    try:
        line, column = where()
    except (KeyError, IndexError, TypeError, AttributeError):
        return
    document.positions[path] = (line + 1, column + 1)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _scalar(value: Any) -> Any:
    """Strip ruamel's scalar subclasses so that ``type(x) is str`` style checks hold."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def path_part(key: object) -> PathPart:
    """A mapping key as a path part: text and integers as they are, anything else as text."""
    return key if isinstance(key, str | int) else str(key)
