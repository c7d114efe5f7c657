"""Catalogue cases: training, models and the command line (README: "What forcematch refuses")."""

from __future__ import annotations

from catalogue import Case  # noqa: F401  (also Tiny, config_with, run, TINY)

CASES: list[Case] = []
