"""Catalogue cases: the config that runs is the one the user wrote (docs/explanation/
refusals.md, "The config that runs is the one you wrote").

A config file is read strictly (`forcematch.config.file`): what would make the config that
runs differ from the file as written (a key written twice, YAML anchors and aliases, merge
keys, keys YAML does not read as strings), and files that would exhaust memory or the parser,
are refused naming the line. A config that expands to something absurd (`forcematch.config.
check_size`) is refused naming the keys. Refusals that only `snakemake` can show (two config
files, `--config`) are in tests/test_workflow.py.
"""

from __future__ import annotations

from collections.abc import Callable

from catalogue import TINY, Case, config_with

# The billion laughs: 1 KB that expands to 10^9 strings in anything that walks it.
BILLION_LAUGHS = "".join(
    [f"a0: &a0 [{', '.join(['lol'] * 10)}]\n"]
    + [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]\n" for k in range(1, 9)]
)


def tiny_text() -> str:
    return TINY.read_text()


def written(text: str, name: str = "bad.yaml") -> Callable:
    """A case that runs check-config on a file holding `text` (called with the tiny config's
    text when `text` is a function)."""

    def argv(tiny, tmp):
        path = tmp / name
        path.write_text(text() if callable(text) else text)
        return ["check-config", path]

    return argv


def check_config(**sections) -> Callable:
    return lambda tiny, tmp: ["check-config", config_with(tmp, **sections)]


def alias_in_simulate(tiny, tmp):
    path = tmp / "bad.yaml"
    path.write_text(BILLION_LAUGHS + tiny_text())
    return ["simulate", "--config", path, "--replica", 0, "--out", tmp / "replica_0.h5"]


def config_too_big(tiny, tmp):
    path = tmp / "bad.yaml"
    path.write_text(tiny_text() + ("# padding\n" * 200_000))
    return ["check-config", path]


def config_not_text(tiny, tmp):
    path = tmp / "bad.yaml"
    path.write_bytes(tiny_text().encode() + b"\xff\xfe\x00")
    return ["check-config", path]


def config_is_directory(tiny, tmp):
    (tmp / "config.yaml").mkdir()
    return ["check-config", tmp / "config.yaml"]


CASES: list[Case] = [
    Case("config-duplicate-section", "a section written twice (YAML keeps the last silently)",
         written(lambda: tiny_text() + "train:\n  epochs: 4\n"),
         r"bad.yaml: line \d+: duplicate key 'train' at the top level \(first at line \d+\); "
         r"each key may appear once"),
    Case("config-duplicate-key", "a key written twice in one section",
         written(lambda: tiny_text().replace("  epochs: 2\n", "  epochs: 2\n  epochs: 20\n", 1)),
         r"bad.yaml: line \d+: duplicate key 'epochs' in 'train' \(first at line \d+\)"),
    Case("config-duplicate-json-key", "a key written twice in a JSON config",
         written('{"train": {"epochs": 2,\n  "epochs": 20}}', "bad.json"),
         r"bad.json: line 1: duplicate key 'epochs' in the JSON object that starts on this "
         r"line"),
    Case("config-alias", "YAML anchors and aliases (a 1 KB \"billion laughs\" of nested aliases)",
         alias_in_simulate,
         r"bad.yaml: line 1: YAML anchor '&a0' refused: anchors and aliases are not allowed in "
         r"a config \(write each value out\)"),
    Case("config-merge-key", "a YAML merge key `<<`",
         written(lambda: tiny_text().replace("train:\n", "train:\n  <<: {epochs: 3}\n", 1)),
         r"bad.yaml: line \d+: YAML merge key '<<' in 'train' refused: write each key out"),
    Case("config-key-not-string", "a key YAML does not read as a string (`on:`, `yes:`, `1:`)",
         written(lambda: tiny_text().replace("train_by_model:\n", "train_by_model:\n  on: "
                                             "{epochs: 3}\n", 1)),
         r"bad.yaml: line \d+: key 'on' in 'train_by_model' is not a string \(YAML reads it as "
         r"bool\); quote it"),
    Case("config-too-deep", "lists nested 10,000 deep (would exhaust Python's recursion)",
         written("system: " + "[" * 10_000 + "]" * 10_000 + "\n"),
         r"bad.yaml: line 1: nested deeper than 32 levels"),
    Case("config-too-big", "a config file over 1 MiB", config_too_big,
         r"bad.yaml: \d+ bytes; a config file may have at most 1048576 bytes \(1 MiB\)"),
    Case("config-not-text", "a config file that is not UTF-8 text", config_not_text,
         r"bad.yaml: line \d+: not UTF-8 text \(byte \d+\)"),
    Case("config-is-directory", "a directory given as the config file", config_is_directory,
         r"config file .*config.yaml is a directory"),
    Case("config-not-a-mapping", "a config that is a list, not a mapping",
         written("- system\n- train\n"), r"bad.yaml: the config must be a mapping, got list"),
    Case("sweep-too-large", "a sweep of more than 500 training runs",
         check_config(sweep={"n_train": list(range(1, 201))}),
         r"bad.yaml: the sweep asks for 600 training runs \(1 sweep.models x 3 sweep.losses x "
         r"200 sweep.n_train\); the limit is 500"),
    Case("replicas-too-many", "more than 1,000 replicas (simulation jobs)",
         check_config(simulate={"replicas": 5000}),
         r"bad.yaml: simulate.replicas = 5000 exceeds the limit of 1000 simulation jobs"),
    Case("reference-data-too-large", "more than 100 GB of reference positions and forces",
         check_config(simulate={"frames_per_replica": 2_000_000_000}),
         r"bad.yaml: simulate.replicas x simulate.frames_per_replica x system.n_atoms = 3 x "
         r"2000000000 x 32 atom-frames need 9.22e\+03 GB of positions and forces \(48 bytes "
         r"each\); the limit is 100 GB"),
    Case("md-work-too-large", "more than 10^12 atom-steps of MD",
         check_config(simulate={"steps_between_frames": 1_000_000_000}),
         r"bad.yaml: 3 replicas x 40000000200 MD steps \(simulate.equilibration_steps \+ "
         r"frames_per_replica x steps_between_frames\) x 32 atoms = 3.84e\+12 atom-steps; the "
         r"limit is 1e\+12"),
]
