"""YAML text -> a tree of Node objects that keep their line and column; loads safely."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import PackError, Problem

MAX_PACK_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # bounds alias expansion ("billion laughs") as well as sheer size
MAX_DEPTH = 64
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # only "\uXXXX" escapes make them; no encoding can write one

# Scalar tags a pack may use. Anything else (!!python/object, custom tags) is refused:
# a pack is data, and no tag may build an object.
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_ESCAPE_WIDTH = {"x": 4, "u": 6, "U": 10}  # source characters of one escape in a double-quoted scalar
_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass(slots=True)
class Node:
    """A loaded YAML value with its 1-based position; maps also keep their keys' positions."""

    value: Any  # dict[str, Node] | list[Node] | str | int | float | bool | None
    line: int
    column: int
    quoted: bool = False
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)
    source: str | None = None  # a one-line scalar as written (quotes, escapes), for positions inside it

    def position_of(self, offset: int) -> tuple[int, int]:
        """Line and column of character ``offset`` of a string value, through quotes and escapes.

        Only a scalar written on one line maps exactly; any other points at the value's start.
        """
        text = self.source
        if text is None:
            return self.line, self.column
        if not self.quoted:
            return self.line, self.column + max(0, min(offset, len(text)))
        index = 1
        for _ in range(offset):
            if index >= len(text) - 1:
                break
            if text[0] == "'":
                index += 2 if text.startswith("''", index) else 1
            elif text[index] == "\\":
                index += _ESCAPE_WIDTH.get(text[index + 1:index + 2], 2)
            else:
                index += 1
        return self.line, self.column + index

    def plain(self) -> Any:
        """The value with all positions stripped."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


class _Builder:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.problems: list[Problem] = []
        self.whole = True  # False once a value is dropped or kept only as text (refused tag, merge key)
        self.count = 0
        self.constructor = yaml.SafeLoader("")

    def problem(self, node: yaml.Node, message: str, whole: bool = False) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.path, mark.line + 1, mark.column + 1, message))
        self.whole = self.whole and whole

    def build(self, node: yaml.Node, depth: int) -> Node:
        self.count += 1
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if self.count > MAX_NODES:
            raise _TooLarge(1, 1, f"pack has more than {MAX_NODES} values (or too many aliases)")
        if depth > MAX_DEPTH:
            raise _TooLarge(line, column, f"pack is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, depth, line, column)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self.problem(node, f'unsupported tag "{_short(node.tag)}"')
            return Node([self.build(item, depth + 1) for item in node.value], line, column)
        assert isinstance(node, yaml.ScalarNode)
        if node.tag not in _SCALAR_TAGS:
            self.problem(node, f'unsupported tag "{_short(node.tag)}"')
            return Node(node.value, line, column)
        quoted = node.style in ("'", '"')
        source = None
        if node.style in (None, "'", '"') and node.start_mark.line == node.end_mark.line:
            source = self.text[node.start_mark.index:node.end_mark.index]
        if node.tag == "tag:yaml.org,2002:timestamp":
            # Keep dates and times as written: the declared field type converts them.
            return Node(node.value, line, column, quoted, source=source)
        value = self.constructor.construct_object(node)
        if isinstance(value, (dt.date, bytes)):
            value = node.value
        if isinstance(value, str) and (surrogate := LONE_SURROGATE.search(value)):
            # a "\ud800" escape: not a character, and no report could be written with it
            self.problem(node, f"a lone surrogate (\\u{ord(surrogate[0]):04x}) is not a character")
            value = LONE_SURROGATE.sub("\ufffd", value)
        return Node(value, line, column, quoted, source=source)

    def _mapping(self, node: yaml.MappingNode, depth: int, line: int, column: int) -> Node:
        if node.tag != _MAP_TAG:
            self.problem(node, f'unsupported tag "{_short(node.tag)}"')
        result: dict[str, Node] = {}
        keys: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node, 'merge keys ("<<") are not supported')
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, "a key must be a plain name")
                continue
            key = str(key_node.value)
            position = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in keys:
                first = keys[key][0]
                self.problem(key_node, f'duplicate key "{key}" (first at line {first})', whole=True)
                continue
            keys[key] = position
            result[key] = self.build(value_node, depth + 1)
        return Node(result, line, column, keys=keys)


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


class _TooLarge(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class _SafeComposer(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type stubs here
    """SafeLoader that stops composing past MAX_DEPTH or MAX_NODES, in time linear in the text.

    Stock PyYAML rescans every pending simple key (one per open "[" or "{") for every token, so
    nested flow collections cost depth x tokens: a 240 KB pack of 300-deep lists took 20 s, and
    3.6 MB of 60-deep lists 150 s. The pending keys are stored in the order they were seen, and
    their position and token number only grow in that order, so the stale ones are a prefix and
    the first one is the nearest: the two methods below give PyYAML's answers without the rescan.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        self.nodes += 1
        try:
            if self.nodes > MAX_NODES:
                raise _TooLarge(1, 1, f"pack has more than {MAX_NODES} values (or too many aliases)")
            is_key = isinstance(parent, yaml.MappingNode) and index is None
            if self.depth > MAX_DEPTH + 1 and not is_key:  # a value's depth here is _Builder's plus one
                mark = self.peek_event().start_mark
                raise _TooLarge(mark.line + 1, mark.column + 1, f"pack is nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def next_possible_simple_key(self) -> int | None:
        for key in self.possible_simple_keys.values():
            return int(key.token_number)
        return None

    def stale_possible_simple_keys(self) -> None:
        for level, key in list(self.possible_simple_keys.items()):
            if key.line == self.line and self.index - key.index <= 1024:
                break  # this key and every later one are still possible
            if key.required:
                raise yaml.scanner.ScannerError("while scanning a simple key", key.mark,
                                                "could not find expected ':'", self.get_mark())
            del self.possible_simple_keys[level]


def _syntax(exc: yaml.MarkedYAMLError) -> tuple[int, int, str]:
    """Position and message of a YAML syntax error, in the house style (double quotes, lower case)."""
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    if problem.startswith("but ") and context:
        message = f"{context}, {problem}"  # "expected a single document in the stream, but found another"
    elif context and exc.context_mark and (exc.context_mark.line, exc.context_mark.column) != (mark.line, mark.column):
        where = exc.context_mark.line + 1
        message = f"{problem or 'invalid YAML'} ({context} started at line {where})"
    else:
        message = problem or context or "invalid YAML"
    return line, column, "syntax error: " + re.sub(r"'([^']*)'", r'"\1"', message)


class DuplicateKeys(PackError):
    """Only duplicate keys, each keeping its first value: ``tree`` is whole, so the caller can run
    its own checks on it too and show every problem at once (after a refused tag or merge key
    they would only add noise)."""

    def __init__(self, problems: list[Problem], tree: Node) -> None:
        super().__init__(problems)
        self.tree = tree


def load_yaml(text: str, path: str, what: str = "pack") -> Node:
    """Parse one pack file (or a map, a scenario file: ``what`` names it in messages); raise PackError
    listing every syntax or structure problem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PACK_BYTES:
        raise PackError([Problem(path, 1, 1, f"{what} is larger than {MAX_PACK_BYTES // 1048576} MiB")])
    if "\x00" in text:
        index = text.index("\x00")
        line = text.count("\n", 0, index) + 1
        column = index - text.rfind("\n", 0, index)
        raise PackError([Problem(path, line, column, f"NUL byte in {what}")])
    builder = _Builder(path, text)
    try:
        root = yaml.compose(text, Loader=_SafeComposer)
    except yaml.MarkedYAMLError as exc:
        raise PackError([Problem(path, *_syntax(exc))]) from None
    except yaml.reader.ReaderError as exc:  # a control character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise PackError([Problem(path, line, column, f"control character U+{exc.character:04X} in {what}")]) from None
    except yaml.YAMLError as exc:
        raise PackError([Problem(path, 1, 1, f"syntax error: {exc}")]) from None
    except _TooLarge as exc:
        raise PackError([Problem(path, exc.line, exc.column, str(exc).replace("pack", what, 1))]) from None
    except RecursionError:
        raise PackError([Problem(path, 1, 1, f"{what} is nested more than {MAX_DEPTH} levels deep")]) from None
    if root is None:
        raise PackError([Problem(path, 1, 1, f"empty {what}")])
    try:
        tree = builder.build(root, 0)
    except _TooLarge as exc:
        raise PackError([Problem(path, exc.line, exc.column, str(exc).replace("pack", what, 1))]) from None
    if builder.problems and builder.whole:
        raise DuplicateKeys(builder.problems, tree)
    if builder.problems:
        raise PackError(builder.problems)
    return tree


def read_pack_text(path: str) -> tuple[str, bytes]:
    """The pack's text and raw bytes; a file that is not UTF-8 is a pack problem."""
    from pathlib import Path

    data = Path(path).read_bytes()
    return decode_pack(data, path), data


def decode_pack(data: bytes, path: str, what: str = "pack") -> str:
    """A pack's bytes as text; bytes that are not UTF-8 are a pack problem at their position."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[data.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8-sig")) + 1
        raise PackError([Problem(path, line, column, f"{what} is not UTF-8 (byte 0x{data[exc.start]:02x})")]) from None
    return text


def top_level_keys(path: str) -> set[str]:
    """The keys a YAML file's first 64 KiB write at the top level (``pack``, ``map``, ``waivers``):
    enough to tell a pack from a map or a waivers file without parsing it; empty if unreadable."""
    from pathlib import Path

    try:
        head = Path(path).read_bytes()[:65536].decode("utf-8-sig", "replace")
    except OSError:
        return set()
    if head.lstrip().startswith("{"):  # a JSON file: its object's keys
        try:
            data = json.loads(Path(path).read_bytes()[:MAX_PACK_BYTES].decode("utf-8-sig"))
        except (OSError, ValueError, RecursionError):
            return set()
        return set(data) if isinstance(data, dict) else set()
    return {line.split(":", 1)[0].strip("\"'") for line in head.splitlines()
            if (line[:1].isalpha() or line[:1] in "\"'") and ":" in line}
