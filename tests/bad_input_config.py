"""Catalogue cases: the config that runs is the one the user wrote (README: "What forcematch
refuses")."""

from __future__ import annotations

from catalogue import Case  # noqa: F401  (also Tiny, config_with, run, TINY)

CASES: list[Case] = []
