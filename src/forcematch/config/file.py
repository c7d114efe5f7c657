"""Read a config file exactly as written: what the user sees in the file is what runs.

YAML through a strict SafeLoader that refuses, naming the line, before anything is built:
- anchors and aliases (`&a`, `*a`): a 1 KB file of nested aliases ("billion laughs") expands
  to gigabytes in any consumer that walks it; refused at the first anchor, before composing
  the rest of the file;
- merge keys (`<<`), which need aliases or silently mix mappings;
- duplicate keys (a section or a key written twice: PyYAML keeps the last one silently);
- keys that are not strings (YAML 1.1 reads `on:`/`yes:` as booleans, `1:` as an integer);
- nesting deeper than MAX_NESTING levels (the schema needs 4).
JSON (`.json`) through Python's parser, refusing duplicate keys in the same way.
Files over MAX_CONFIG_BYTES and files that are not UTF-8 text are refused before parsing.

A config may name the file it varies (`read_config_with_bases`): `extends: config.yaml`
(relative to the file that says it) takes that file, itself read the same way, and lays this
file's keys over it: a mapping merges key by key, at any depth; anything else (a list, a
number, null) replaces the base's value. What runs is the merged result, which
`forcematch check-config` prints.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from forcematch.errors import ForcematchError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: the default config is 2 KB
MAX_NESTING = 32  # levels of mappings and lists; the schema's deepest key is 4 levels down

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A construct the strict loader refuses, at a 1-based line."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing anchors, aliases and nesting deeper than MAX_NESTING while it
    composes (so nothing expands); `check_keys` then refuses duplicate, merge and non-string
    keys on the composed tree, which knows every key's line and path."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(line, f"YAML alias '*{event.anchor}' refused: anchors and aliases "
                                 "are not allowed in a config (write each value out)")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(line, f"YAML anchor '&{event.anchor}' refused: anchors and aliases "
                                 "are not allowed in a config (write each value out)")
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise _Refused(line, f"nested deeper than {MAX_NESTING} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _where(path: list[str]) -> str:
    return f"in '{'.'.join(path)}'" if path else "at the top level"


def check_keys(node, path: list[str]) -> None:
    """Refuse merge keys, non-string keys and duplicate keys anywhere under `node`."""
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            check_keys(item, [*path, str(index)])
        return
    if not isinstance(node, MappingNode):
        return
    first_line: dict[str, int] = {}
    for key, value in node.value:
        line = key.start_mark.line + 1
        if key.tag == _MERGE:
            raise _Refused(line, f"YAML merge key '<<' {_where(path)} refused: write each key "
                                 "out")
        if not isinstance(key, ScalarNode) or key.tag != _STR:
            text = key.value if isinstance(key, ScalarNode) else "a non-scalar key"
            kind = key.tag.rsplit(":", 1)[-1]
            raise _Refused(line, f"key {text!r} {_where(path)} is not a string (YAML reads it "
                                 f"as {kind}); quote it")
        if key.value in first_line:
            raise _Refused(line, f"duplicate key '{key.value}' {_where(path)} (first at line "
                                 f"{first_line[key.value]}); each key may appear once")
        first_line[key.value] = line
        check_keys(value, [*path, key.value])


def _load_yaml(text: str) -> Any:
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_keys(node, [])
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _load_json(text: str) -> Any:
    """json.loads, refusing a key that appears twice in one object (naming the object's line)."""
    decoder = json.JSONDecoder(object_pairs_hook=list)

    def parse_object(s_and_end, *args, **kwargs):
        text, start = s_and_end
        pairs, end = json.decoder.JSONObject(s_and_end, *args, **kwargs)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                line = text.count("\n", 0, start) + 1
                raise _Refused(line, f"duplicate key '{key}' in the JSON object that starts on "
                                     "this line; each key may appear once")
            seen.add(key)
        return dict(pairs), end

    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # calls our parse_object
    return decoder.decode(text)


def read_config_file(path: str | Path) -> Any:
    """The parsed content of config file `path`; ForcematchError naming the file (and line)."""
    path = Path(path)
    if path.is_dir():
        raise ForcematchError(f"config file {path} is a directory")
    if not path.is_file():
        raise ForcematchError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ForcematchError(f"{path}: {size} bytes; a config file may have at most "
                              f"{MAX_CONFIG_BYTES} bytes (1 MiB)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ForcematchError(f"{path}: line {line}: not UTF-8 text (byte {err.start})") from None
    try:
        # JSON through its own parser: PyYAML (YAML 1.1) reads JSON's 3e-05 as a string.
        return _load_json(text) if path.suffix == ".json" else _load_yaml(text)
    except _Refused as err:
        raise ForcematchError(f"{path}: line {err.line}: {err.message}") from None
    except RecursionError:
        raise ForcematchError(f"{path}: nested deeper than Python can parse") from None
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        detail = " ".join(str(err).split())  # one line
        raise ForcematchError(f"{path}: not valid YAML or JSON: {detail}") from err


MAX_EXTENDS = 8  # files in one chain of `extends`


def merge_over(base: Any, override: Any) -> Any:
    """`override` laid over `base`: mappings merge key by key (recursively); any other value
    of `override` replaces the base's."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge_over(base[key], value) if key in base else value
    return merged


def read_config_with_bases(path: str | Path) -> Any:
    """`read_config_file(path)` with its `extends` chain resolved (module docstring): the
    merged mapping, without the `extends` key. A missing base, a cycle or an `extends` that is
    not a file name is refused naming the file that says it."""
    chain: list[Path] = []
    layers = []
    current = Path(path)
    while True:
        resolved = current.resolve()
        if resolved in chain:
            names = " -> ".join(str(p) for p in [*chain, resolved])
            raise ForcematchError(f"{current}: extends makes a cycle: {names}")
        if len(chain) >= MAX_EXTENDS:
            raise ForcematchError(f"{path}: more than {MAX_EXTENDS} files in its chain of "
                                  "extends")
        chain.append(resolved)
        content = read_config_file(current)
        if not isinstance(content, dict) or "extends" not in content:
            layers.append(content)
            break
        base = content.pop("extends")
        if not isinstance(base, str) or not base.strip():
            raise ForcematchError(f"{current}: extends must name a config file (a path "
                                  f"relative to {current.parent}), got {base!r}")
        layers.append(content)
        named = current.parent / base
        if not named.is_file():
            raise ForcematchError(f"{current}: extends {base!r}, but {named} is not a file")
        current = named
    merged = layers.pop()
    for layer in reversed(layers):
        merged = merge_over(merged, layer)
    return merged
