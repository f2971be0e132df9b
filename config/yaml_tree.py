"""Parses YAML while keeping node positions, so any key path can be traced back to its line."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlDocument:
    """The constructed data of one YAML document and its node tree (None for an empty file)."""

    data: object
    root: Node | None

    def locate(self, loc: Sequence[int | str], missing: bool = False) -> tuple[str, int | None]:
        """The dotted key path and 1-based line for a validation location.

        Elements with no YAML node (pydantic's union tags like ``'int'``) are passed over. With
        ``missing``, the last element names an absent key: it joins the path and the line is
        that of the parent key, where a person would add it.
        """
        if self.root is None:
            return _dotted(loc), None
        node: Node = self.root
        line = node.start_mark.line + 1
        parts: list[int | str] = []
        for index, element in enumerate(loc):
            found = _child(node, element)
            if found is not None:
                key_node, node = found
                # a sequence item has no key node and shows as [i]; a mapping key as .key
                parts.append(element if key_node is None else str(element))
                line = (key_node or node).start_mark.line + 1
            elif missing and index == len(loc) - 1:
                parts.append(str(element))
        return _dotted(parts), line

    def duplicate_keys(self) -> Iterator[tuple[str, int, int]]:
        """(key path, line, line of the first occurrence) for every key given twice in a mapping.

        PyYAML keeps the last value silently; a person editing the first one would wonder why
        nothing changes.
        """
        if self.root is not None:
            yield from _duplicates(self.root, [], set())


def parse(text: bytes | str) -> YamlDocument:
    """Parse one YAML document; raises ``yaml.YAMLError`` (with a mark) for bad syntax."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return YamlDocument(data=data, root=root)


def _child(node: Node, element: int | str) -> tuple[Node | None, Node] | None:
    """(key node, value node) for ``element`` in a mapping, (None, item) in a sequence."""
    if isinstance(node, SequenceNode):
        if isinstance(element, int) and 0 <= element < len(node.value):
            return None, node.value[element]
        return None
    if not isinstance(node, MappingNode):
        return None
    found = None
    merges: list[Node] = []
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            merges.append(value)
        elif isinstance(key, ScalarNode) and key.value == str(element):
            found = (key, value)  # the last one wins, as in the constructed data
    if found is not None:
        return found
    # keys merged in with "<<: *anchor" live in the anchored mapping(s)
    for merged in merges:
        sources = merged.value if isinstance(merged, SequenceNode) else [merged]
        for source in sources:
            hit = _child(source, element)
            if hit is not None:
                return hit
    return None


def _duplicates(node: Node, path: list[int | str], seen: set[int]) -> Iterator[tuple[str, int, int]]:
    if id(node) in seen:  # anchors can make the tree a graph
        return
    seen.add(id(node))
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicates(item, [*path, index], seen)
    elif isinstance(node, MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                line = key.start_mark.line + 1
                if key.value in first_line:
                    yield _dotted([*path, key.value]), line, first_line[key.value]
                else:
                    first_line[key.value] = line
                yield from _duplicates(value, [*path, key.value], seen)


def _dotted(parts: Sequence[int | str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
