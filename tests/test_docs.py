"""The documentation site (docs/): it builds with warnings as errors, its generated references
cover the code, and its pages open in a browser with every internal link resolving.

The site is built once for the module, for real (`python -m sphinx -W`), into a temporary
directory; the generated reference bodies land in docs/reference/_generated/ (git-ignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import chromium

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _reference_extension():
    """docs/_ext/forcematch_reference.py, the extension that writes the generated pages."""
    spec = importlib.util.spec_from_file_location(
        "forcematch_reference", DOCS / "_ext" / "forcematch_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema_keys(node: dict, defs: dict, prefix: str = "") -> list[str]:
    """Every key of the config schema, dotted (`train.seed`; `system.species[].name` for the
    items of an array; the object branch of a oneOf: `import.units.length`)."""
    while "$ref" in node:
        node = defs[node["$ref"].removeprefix("#/$defs/")]
    keys = []
    for key, sub in node.get("properties", {}).items():
        name = f"{prefix}{key}"
        while "$ref" in sub:
            sub = defs[sub["$ref"].removeprefix("#/$defs/")]
        keys.append(name)
        keys += _schema_keys(sub, defs, f"{name}.")
        if isinstance(sub.get("items"), dict):
            keys += _schema_keys(sub["items"], defs, f"{name}[].")
        for branch in sub.get("oneOf", []) + sub.get("anyOf", []):
            keys += _schema_keys(branch, defs, f"{name}.")
    return keys


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("forcematch's parser has no subcommands")


@pytest.mark.quick
def test_generated_references_cover_the_code():
    """Every config key, every subcommand and its options, every catalogue case in the pages
    the extension generates, with the lists taken from the code."""
    from forcematch.cli import build_parser
    from forcematch.config import schema

    ext = _reference_extension()
    config_md = ext.config_reference()
    keys = _schema_keys(schema(), schema()["$defs"])
    assert len(keys) > 100 and "train.seed" in keys and "import.units.length" in keys
    assert [k for k in keys if f"`{k}`\n" not in config_md] == []

    cli_md = ext.cli_reference()
    sections = cli_md.split("\n## forcematch ")[1:]
    by_name = {section.split("\n", 1)[0]: section for section in sections}
    subcommands = _subparsers(build_parser())
    assert list(by_name) == list(subcommands)
    for name, sub in subcommands.items():
        options = [s for a in sub._actions for s in a.option_strings if s not in ("-h", "--help")]
        assert [o for o in options if f"`{o}" not in by_name[name]] == [], name

    refusals = ext.refusal_cases(ROOT / "tests")
    ids = [case["id"] for _, cases in refusals for case in cases]
    from test_bad_input import CASES

    assert ids == [case.id for case in CASES]
    refusals_md = ext.refusals_reference(ROOT / "tests")
    assert all(f"| `{case_id}` |" in refusals_md for case_id in ids)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as the docs' conf.py says (warnings are errors)."""
    out = tmp_path_factory.mktemp("docs") / "html"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS),
         str(out)], capture_output=True, text=True, cwd=ROOT)
    print(f"docs built in {time.monotonic() - start:.1f} s")
    assert result.returncode == 0, (result.stdout[-3000:] + result.stderr[-5000:])
    return out


def test_site_builds_with_warnings_as_errors(site):
    for page in ("index", "getting-started", "results", "reference/cli", "reference/config",
                 "reference/formats", "reference/refusals", "reference/api"):
        assert (site / f"{page}.html").is_file(), page
    api = (site / "reference" / "api.html").read_text()
    for module in ("potential", "models", "md.engine", "md.neighbours", "md.pair_table",
                   "md.protocol", "calculators", "imports"):
        assert f'id="module-forcematch.{module}"' in api, module
    config = (site / "reference" / "config.html").read_text()
    assert "train.seed" in config and "import.units.length" in config


def _internal_pages(hrefs: list[str], site: Path) -> set[Path]:
    """The files of the site that `hrefs` (resolved URLs) point to: .html under `site`, with
    any '#' part dropped."""
    pages = set()
    for href in hrefs:
        url = urlsplit(href)
        path = Path(unquote(url.path))
        if url.scheme == "file" and path.suffix == ".html" and path.is_relative_to(site):
            pages.add(path)
    return pages


def test_pages_open_in_a_browser_with_resolving_links(site):
    from selenium.webdriver.common.by import By

    site = site.resolve()
    pages = [site / "index.html", site / "reference" / "config.html"]
    tutorials = sorted((site / "tutorials").glob("*.html"))
    pages += tutorials[:1]  # one tutorial, where the site has any
    browser = chromium()
    try:
        for page in pages:
            browser.get(page.as_uri())
            body = browser.find_element(By.TAG_NAME, "body").text
            assert body.strip(), page
            hrefs = browser.execute_script(
                "return Array.from(document.querySelectorAll('a[href]'), a => a.href)")
            linked = _internal_pages(hrefs, site.resolve())
            assert linked, page
            assert sorted(str(p) for p in linked if not p.is_file()) == [], page
    finally:
        browser.quit()
