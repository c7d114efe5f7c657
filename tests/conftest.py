"""Fixtures shared by the test modules: 64-bit JAX for a test body, and the tiny dataset.

The tiny dataset is real: the tiny config (tests/config/tiny.yaml) simulated with OpenMM,
3 replicas of 40 frames of 32 atoms, split by `forcematch.dataset`. It is built once per test
session; tests that change files copy it first.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from forcematch.commands import use_compilation_cache

# JAX's persistent compilation cache, as every `forcematch` stage uses it (before JAX is
# imported): the suite trains, validates and runs MD in-process with the same functions and
# shapes many times, and a repeated compilation is then a file read.
use_compilation_cache()

import jax  # noqa: E402 (after the cache is configured)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"


# The quick tier (`pytest -m quick`, the inner loop: under 2 minutes on 2 cores): each stage's
# code once, in-process, on the tiny data (MD through the OpenMM engine; the JAX MD engine and
# the Snakemake runs are left to the full suite), and one refusal of each family of the documented
# catalogue (config, data, training and model files, import, MD). A name without brackets takes
# every parameter of that test.
QUICK = {
    "test_atomic.py::test_descriptors_match_brute_force_triplets",
    "test_bad_input.py::test_refused_with_a_clear_message[unknown-key]",
    "test_bad_input.py::test_refused_with_a_clear_message[config-duplicate-key]",
    "test_bad_input.py::test_refused_with_a_clear_message[test-forces-constant]",
    "test_bad_input.py::test_refused_with_a_clear_message[force-labels-flipped]",
    "test_bad_input.py::test_refused_with_a_clear_message[model-state-not-msgpack]",
    "test_bad_input.py::test_refused_with_a_clear_message[import-units-missing]",
    "test_bad_input.py::test_refused_with_a_clear_message[md-no-reference]",
    "test_cli.py::test_model_path_that_is_a_file",
    "test_cli.py::test_compilation_cache_defaults_and_respects_the_environment",
    "test_collapse.py::test_graph_network_starts_from_the_notebooks_initialisers",
    "test_collapse.py::test_a_cutoff_with_no_neighbours_is_refused_before_training",
    "test_collapse.py::test_redefining_the_loss_after_jit_keeps_the_old_trace",
    "test_config.py::test_cli_reports_config_error_and_exits_2",
    "test_config.py::test_bounds_leave_the_shipped_configs_alone",
    "test_data_checks.py::test_real_replicas_pass_every_check",
    "test_dataset.py::test_build_dataset_writes_splits_and_stats",
    "test_dataset.py::test_atom_count_mismatch_names_the_file",
    "test_export.py::test_openmm_forces_and_energies_match_the_model",
    "test_figures.py::test_parity_panels_state_the_rmse_of_metrics_json",
    "test_h5md.py::test_mdanalysis_reads_with_units",
    "test_h5md.py::test_round_trip_and_parameters",
    "test_import.py::test_extxyz_equals_ase_converted",
    "test_lock.py::test_a_killed_holder_leaves_no_stale_lock",
    "test_md.py::test_pressure_of_an_ideal_gas_is_n_kb_t_over_v",
    "test_md.py::test_rdf_of_the_reference_liquid_and_of_an_ideal_gas",
    "test_md_reference.py::test_drawn_velocities_have_no_net_momentum",
    "test_mixture.py::test_ka_energies_and_forces_match_numpy",
    "test_model_files.py::test_the_intact_model_loads_and_predicts",
    "test_models.py::test_translation_invariance_and_zero_net_force[pair]",
    "test_mpnn.py::test_atom_energies_sum_to_energy",
    "test_progress.py::test_a_terminal_gets_a_bar_a_log_gets_lines_quiet_gets_nothing",
    "test_reliability.py::test_nothing_on_a_load_path_can_run_code",
    "test_simulate.py::test_run_replica_is_bitwise_reproducible_across_processes",
    "test_space.py::test_cell_list_equals_dense_near_faces",
    "test_spline.py::test_argon_fit_matches_the_switched_lj_within_its_band",
    "test_streaming.py::test_prefetcher_order_errors_and_early_close",
    "test_train.py::test_learning_rate_row_is_the_rate_of_the_epochs_last_step",
    "test_validate.py::test_u_reference_only_for_its_state",
    "test_workflow.py::test_stage_slices_give_the_stage_hashes_of_the_whole_config",
    "test_virial.py::test_virial_equals_openmm_strain_derivatives",
    "test_virial.py::test_simulate_stores_each_frames_virial",
    "test_layout.py::test_only_potential_and_models_read_a_potentials_internals",
    "test_layout.py::test_host_side_data_code_needs_no_jax",
    "test_layout.py::test_models_never_call_the_config_layer",
    "test_layout.py::test_training_never_imports_the_spline_fit",
    "test_layout.py::test_figures_never_load_a_model",
}


def pytest_collection_modifyitems(config, items):
    """Mark the tests of `QUICK` with `quick`; a name in QUICK that matches no test is an
    error, so the tier cannot shrink silently when a test is renamed."""
    found = set()
    for item in items:
        name = f"{Path(item.path).name}::{item.name}"
        for key in (name, name.split("[")[0]):
            if key in QUICK:
                item.add_marker(pytest.mark.quick)
                found.add(key)
    collected = {Path(item.path).name for item in items}
    missing = {key for key in QUICK - found if key.split("::")[0] in collected}
    some_tests_only = (any("::" in arg for arg in config.args) or config.getoption("deselect")
                       or config.getoption("keyword"))
    if missing and not some_tests_only:
        raise pytest.UsageError(f"tests/conftest.py QUICK names tests that do not exist: "
                                f"{', '.join(sorted(missing))}")


def tiny_config(directory: Path, name: str = "config.yaml", **sections) -> Path:
    """tests/config/tiny.yaml with the keys of `sections` ({section: {key: value}}) replaced,
    written to `directory/name`."""
    config = yaml.safe_load(TINY.read_text())
    for section, values in sections.items():
        config[section] = config.get(section, {}) | values
    path = directory / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def keep_environment():
    """Restore os.environ after the test: `forcematch train` run in-process sets thread
    variables (XLA_FLAGS, OMP_NUM_THREADS, ...) for its own process."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def x64():
    """Run a test body with 64-bit JAX, restoring the global setting afterwards."""
    with jax.enable_x64(True):
        yield


@dataclass(frozen=True)
class TinyData:
    """Real outputs of the tiny config: its config file, the replicas and the dataset splits."""

    root: Path
    config: Path
    replicas: list[Path]
    dataset: Path

    def copy_replicas(self, tmp: Path) -> list[Path]:
        return [Path(shutil.copy(p, tmp / p.name)) for p in self.replicas]

    def copy_dataset(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.dataset, tmp / "dataset"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    """The tiny config simulated (3 replicas) and split into dataset/{train,val,test}.h5."""
    from forcematch.config import load_config
    from forcematch.dataset import build_dataset
    from forcematch.reference import run_replica

    root = tmp_path_factory.mktemp("tiny")
    config_path = Path(shutil.copy(TINY, root / "config.yaml"))
    config = load_config(config_path)
    replicas = [root / f"replica_{k}.h5" for k in range(config["simulate"]["replicas"])]
    for k, path in enumerate(replicas):
        run_replica(config, k, path, progress=None)
    build_dataset(config, replicas, root / "dataset", progress=lambda _: None)
    return TinyData(root, config_path, replicas, root / "dataset")


def chromium():
    """A headless Chromium driven through Selenium for the report and docs tests (the Debian
    packages chromium and chromium-driver; no browser download), or a skip saying what is
    missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = browser
    return webdriver.Chrome(service=Service(driver), options=options)
