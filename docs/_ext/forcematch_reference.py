"""Generated reference pages: the CLI, the config schema, the refusal catalogue, metrics units.

On `builder-inited` this writes Markdown bodies to docs/reference/_generated/ (git-ignored;
the hand-written pages under docs/reference/ include them), from:

- the argparse parser (`forcematch.cli.build_parser`): every subcommand and option;
- the config schema (`forcematch.config.schema`): every key, dotted, with type and default;
- the refusal catalogue of the tests (tests/test_bad_input.py and the tests/bad_input_*.py
  modules it draws on), read as source with `ast`, never imported: id, what is wrong, and the
  message pattern the test asserts;
- the units that validation writes into metrics.json (`forcematch.validation.validate.UNITS`).

A file is rewritten only when its text changes, so an unchanged reference does not make
Sphinx reread the pages that include it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from sphinx.errors import ExtensionError

GENERATED = Path("reference") / "_generated"


# ------------------------------------------------------------------------------ Markdown helpers


def escape(text: str) -> str:
    """`text` on one line, its `code` spans kept and Markdown's other special characters taken
    literally."""
    parts = re.split(r"(`[^`]+`)", " ".join(str(text).split()))
    return "".join(part if k % 2 else re.sub(r"([\\`*_\[\]<>])", r"\\\1", part)
                   for k, part in enumerate(parts))


def code(text) -> str:
    """`text` as an inline code span (fenced by two backticks where it holds one)."""
    text = " ".join(str(text).split())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def literal(value) -> str:
    """A config or default value as written in a config file: strings bare, the rest JSON."""
    return code(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of Markdown cells (a `|` in a cell, even in code, is escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") or " " for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ the CLI


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of every subcommand of `parser`, in the order they were added."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in action._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]


def _option_row(action: argparse.Action, formatter: argparse.HelpFormatter) -> list[str]:
    names = ", ".join(action.option_strings) or action.dest
    value = ""
    if action.option_strings and action.nargs != 0:
        value = formatter._format_args(action, action.dest.upper())
    if action.required:
        default = "required"
    elif action.default in (None, False, (), [], argparse.SUPPRESS) or action.nargs == 0:
        default = ""
    else:
        default = code(action.default)
    helps = escape(formatter._expand_help(action)) if action.help else ""
    return [code(names), code(value) if value else "", default, helps]


def cli_reference() -> str:
    from forcematch.cli import build_parser

    parser = build_parser()
    out = [escape(parser.description or ""), ""]
    for name, help_text, sub in subcommands(parser):
        formatter = argparse.HelpFormatter(prog=sub.prog, width=80)
        formatter.add_usage(sub.usage, sub._actions, sub._mutually_exclusive_groups, prefix="")
        rows = [_option_row(a, formatter) for a in sub._actions
                if not isinstance(a, argparse._HelpAction)]
        out += [f"## forcematch {name}", "", escape(help_text), "",
                "```text", formatter.format_help().strip(), "```", "",
                table(["option", "value", "default", "what it does"], rows) if rows
                else "No options besides `--help`.\n"]
    return "\n".join(out)


# ----------------------------------------------------------------------------- the config schema


def resolve(node: dict, root: dict) -> dict:
    """`node` with its local `$ref` ("#/$defs/<name>") merged in; its own keys win."""
    while "$ref" in node:
        target = root["$defs"][node["$ref"].removeprefix("#/$defs/")]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def config_keys(node: dict, root: dict, prefix: str = "") -> Iterator[tuple[str, dict, bool]]:
    """(dotted key, its schema node with `$ref` resolved, required) of every key under `node`,
    depth first: object properties, `key[].sub` for the properties of array items, and the
    properties of object branches of oneOf/anyOf (`import.units.length`)."""
    node = resolve(node, root)
    for key, sub in node.get("properties", {}).items():
        name, sub = f"{prefix}{key}", resolve(sub, root)
        yield name, sub, key in node.get("required", ())
        yield from config_keys(sub, root, f"{name}.")
        if isinstance(sub.get("items"), dict):
            yield from config_keys(sub["items"], root, f"{name}[].")
        for branch in sub.get("oneOf", []) + sub.get("anyOf", []):
            yield from config_keys(branch, root, f"{name}.")


_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
           ("exclusiveMaximum", "<"))


def type_of(node: dict, root: dict) -> str:
    """What a value must be, as Markdown: types, allowed values, bounds, array items."""
    node = resolve(node, root)
    if "enum" in node:
        return "one of " + ", ".join(literal(v) for v in node["enum"])
    if "const" in node:
        return literal(node["const"])
    types = node.get("type")
    if types is None:
        branches = node.get("oneOf", []) + node.get("anyOf", [])
        return " or ".join(type_of(b, root) for b in branches) or "any"
    types = [types] if isinstance(types, str) else list(types)
    if "array" in types and isinstance(node.get("items"), dict):
        items = type_of(node["items"], root)
        types[types.index("array")] = f"array of ({items})" if " " in items else f"array of {items}"
    bounds = [f"{sign} {node[key]}" for key, sign in _BOUNDS if key in node]
    return " or ".join(types) + (" " + ", ".join(bounds) if bounds else "")


def config_entry(name: str, node: dict, required: bool, root: dict) -> str:
    """One key as a definition: its dotted name; type, default, description."""
    default = "required" if required else ""
    if not required and "default" in node:
        default = f"default {literal(node['default'])}"
    what = "; ".join(filter(None, [type_of(node, root), default]))
    description = escape(node.get("description", ""))
    return f"{code(name)}\n: {what}" + (f"\n\n  {description}" if description else "") + "\n"


def config_reference() -> str:
    """One section per top-level key: its description, type and default, then every key under
    it as a definition list."""
    from forcematch.config import schema

    root = schema()
    out = []
    for section, node, _ in config_keys(root, root):
        if "." in section or "[]" in section:
            continue
        out += [f"## {section}", "", config_entry(section, node, False, root)]
        out += [config_entry(*key, root) for key in config_keys(node, root, f"{section}.")]
    return "\n".join(out)


# ---------------------------------------------------------------------- the refusal catalogue


def _case_fields(catalogue: ast.Module) -> list[str]:
    """The field names of catalogue.Case, in order."""
    cls = next(n for n in catalogue.body if isinstance(n, ast.ClassDef) and n.name == "Case")
    return [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)]


def _cases_in(module: ast.Module, fields: list[str], where: str) -> list[dict]:
    """The literal fields (all but argv) of the Case(...) calls in `CASES = [...]`."""
    for stmt in module.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
        if [getattr(t, "id", None) for t in targets] == ["CASES"] and isinstance(stmt.value,
                                                                                 ast.List):
            return [_case(call, fields, where) for call in stmt.value.elts]
    raise ExtensionError(f"{where}: no `CASES = [...]` list")


def _case(call: ast.expr, fields: list[str], where: str) -> dict:
    try:
        args = dict(zip(fields, call.args, strict=False)) | {k.arg: k.value for k in call.keywords}
        return {k: ast.literal_eval(v) for k, v in args.items() if k != "argv"}
    except (AttributeError, ValueError) as err:
        raise ExtensionError(f"{where}:{call.lineno}: not a Case(...) with a literal id, what "
                             f"and message: {err}") from err


def _names(expr: ast.expr) -> list[str]:
    """The names of `A + B + C`, in order."""
    if isinstance(expr, ast.BinOp):
        return _names(expr.left) + _names(expr.right)
    return [expr.id]


def refusal_cases(tests: Path) -> list[tuple[str, list[dict]]]:
    """(area, cases) in the order tests/test_bad_input.py runs them: its own CASES, then the
    `CASES += A + B ...` lists it imports from tests/bad_input_*.py."""
    fields = _case_fields(ast.parse((tests / "catalogue.py").read_text()))
    main = ast.parse((tests / "test_bad_input.py").read_text())
    modules = {a.asname or a.name: n.module for n in main.body if isinstance(n, ast.ImportFrom)
               for a in n.names if a.name == "CASES"}
    areas = [("General", _cases_in(main, fields, "tests/test_bad_input.py"))]
    added = next(n.value for n in main.body if isinstance(n, ast.AugAssign)
                 and getattr(n.target, "id", None) == "CASES")
    for name in _names(added):
        path = tests / f"{modules[name]}.py"
        tree = ast.parse(path.read_text())
        title = ast.get_docstring(tree).split("(")[0].removeprefix("Catalogue cases: ").strip()
        areas.append((title[:1].upper() + title[1:], _cases_in(tree, fields, f"tests/{path.name}")))
    return areas


_PATTERN_WORDS = ((r"[\d.e+-]+", "X"), (r"[\d.]+", "X"), (r"\d+", "N"), (r"\d", "N"),
                  (r"\w+", "…"), (r"\S+", "…"), (".*", "…"))


def readable(pattern: str) -> str:
    """A message pattern as a reader would see it: N a number, X a decimal, … any text."""
    text = pattern.removeprefix("^").removesuffix("$")
    for regex, word in _PATTERN_WORDS:
        text = text.replace(regex, word)
    return re.sub(r"\\(.)", r"\1", text)


def refusals_reference(tests: Path) -> str:
    out = []
    for area, cases in refusal_cases(tests):
        rows = [[code(c["id"]), escape(c["what"]), code(readable(c["message"]))]
                for c in cases]
        out += [f"## {area}", "", table(["id", "what is wrong", "what forcematch says"], rows)]
    return "\n".join(out)


# ------------------------------------------------------------------------------ metrics units


def metrics_units_reference() -> str:
    from forcematch.validation.validate import UNITS

    return table(["key", "unit or meaning"], [[code(k), escape(v)] for k, v in UNITS.items()])


# -------------------------------------------------------------------------------------- Sphinx


def _write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` unless it holds it already; whole (two builds may race)."""
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


def write_references(app) -> None:
    out = Path(app.srcdir) / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    tests = Path(app.srcdir).parent / "tests"
    pages = {"cli.md": cli_reference(), "config.md": config_reference(),
             "refusals.md": refusals_reference(tests),
             "metrics_units.md": metrics_units_reference()}
    for name, text in pages.items():
        _write_if_changed(out / name, text)


def setup(app):
    app.connect("builder-inited", write_references)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
