"""Editing a JSON file in place: add or remove one member or item, and leave every other byte as it was.

Client configuration files are written by the clients themselves or by hand, each in its own
layout (inline arrays, four spaces, a key order). Re-serialising a file would rewrite all of
it; these edits splice text instead. ``parse`` finds where each value starts and ends;
``add``/``append``/``remove`` change the text there, indenting what they insert like its new
siblings. An insertion followed by the removal of the same value gives back the original text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]
_WS = " \t\r\n"


@dataclass
class Node:
    kind: str  # "object", "array" or "scalar"
    start: int
    end: int  # one past the last character
    keys: list[str] = field(default_factory=list)  # objects: the members' names, in order
    key_starts: list[int] = field(default_factory=list)  # objects: where each member's name begins
    children: list[Node] = field(default_factory=list)

    def child(self, step: str | int) -> Node:
        if self.kind == "object" and isinstance(step, str):
            return self.children[self.keys.index(step)]
        if self.kind == "array" and isinstance(step, int):
            return self.children[step]
        raise KeyError(step)

    def element_start(self, index: int) -> int:
        """Where element ``index`` begins: its name for a member, its value for an item."""
        return self.key_starts[index] if self.kind == "object" else self.children[index].start


def parse(text: str) -> Node:
    """The spans of every value of the JSON document ``text`` (``ValueError`` when it is not JSON)."""
    json.loads(text)  # the standard parser's verdict and error message first
    node, _ = _value(text, _skip(text, 0))
    return node


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _value(text: str, i: int) -> tuple[Node, int]:
    char = text[i]
    if char == "{":
        node = Node("object", i, i)
        i = _skip(text, i + 1)
        while text[i] != "}":
            key_start = i
            key, i = json.JSONDecoder().raw_decode(text, i)
            i = _skip(text, i)
            assert text[i] == ":"
            child, i = _value(text, _skip(text, i + 1))
            node.keys.append(key)
            node.key_starts.append(key_start)
            node.children.append(child)
            i = _skip(text, i)
            if text[i] == ",":
                i = _skip(text, i + 1)
        node.end = i + 1
        return node, i + 1
    if char == "[":
        node = Node("array", i, i)
        i = _skip(text, i + 1)
        while text[i] != "]":
            child, i = _value(text, i)
            node.children.append(child)
            i = _skip(text, i)
            if text[i] == ",":
                i = _skip(text, i + 1)
        node.end = i + 1
        return node, i + 1
    _, end = json.JSONDecoder().raw_decode(text, i)
    return Node("scalar", i, end), end


def _locate(root: Node, path: Path) -> Node:
    node = root
    for step in path:
        node = node.child(step)
    return node


def _line_indent(text: str, at: int) -> str | None:
    """The whitespace from the start of the line to ``at``, or ``None`` when something else is on the line first."""
    line_start = text.rfind("\n", 0, at) + 1
    lead = text[line_start:at]
    return lead if lead.strip(_WS) == "" else None


def indent_unit(text: str) -> str:
    match = re.search(r"\n([ \t]+)\S", text)
    return match.group(1) if match else "  "


def _render(value: Any, indent: str, unit: str) -> str:
    dumped = json.dumps(value, indent=unit, ensure_ascii=False)
    return dumped.replace("\n", "\n" + indent)


def _insert(text: str, container: Node, element: str, value: Any) -> str:
    """``text`` with ``element`` (a ``"key": `` prefix or nothing) and ``value`` added at the end of ``container``."""
    unit = indent_unit(text)
    if container.children:
        last = len(container.children) - 1
        indent = _line_indent(text, container.element_start(last))
        after = container.children[last].end
        if indent is None:  # an inline container: stay on its line
            return text[:after] + ", " + element + json.dumps(value, ensure_ascii=False) + text[after:]
        return text[:after] + ",\n" + indent + element + _render(value, indent, unit) + text[after:]
    outer = _line_indent(text, container.start)
    outer = outer if outer is not None else ""
    inner = outer + unit
    body = "\n" + inner + element + _render(value, inner, unit) + "\n" + outer
    return text[: container.start + 1] + body + text[container.end - 1 :]


def add(text: str, path: Path, key: str, value: Any) -> str:
    """``text`` with member ``key`` (which must be new) added at the end of the object at ``path``."""
    container = _locate(parse(text), path)
    if container.kind != "object" or key in container.keys:
        raise ValueError(f"cannot add {key!r} at {path}")
    return _insert(text, container, json.dumps(key, ensure_ascii=False) + ": ", value)


def append(text: str, path: Path, value: Any) -> str:
    """``text`` with ``value`` added at the end of the array at ``path``."""
    container = _locate(parse(text), path)
    if container.kind != "array":
        raise ValueError(f"{path} is not an array")
    return _insert(text, container, "", value)


def remove(text: str, path: Path) -> str:
    """``text`` without the member or item at ``path`` (and the comma and whitespace that separated it)."""
    parent = _locate(parse(text), path[:-1])
    step = path[-1]
    index = parent.keys.index(step) if parent.kind == "object" and isinstance(step, str) else int(step)
    count = len(parent.children)
    if count == 1:
        return text[: parent.start + 1] + text[parent.end - 1 :]
    if index > 0:
        return text[: parent.children[index - 1].end] + text[parent.children[index].end :]
    return text[: parent.element_start(0)] + text[parent.element_start(1) :]
