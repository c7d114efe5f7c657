"""The command line: one line and exit status 2 for what a user can fix, tracebacks for bugs,
and a rule's `threads` kept whatever the environment says."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forcematch import cli, commands
from forcematch.io.atomic import OutputError


@pytest.fixture(autouse=True)
def _keep_environment(keep_environment):
    """Every test here runs `forcematch` in-process (conftest.keep_environment)."""


def one_line_error(capsys, argv) -> str:
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["train", "--config", "c", "--dataset-dir", "d", "--out-dir", "o", "--n-train", "abc"],
     "forcematch train: error: argument --n-train: expected 'all' or a frame count >= 1, got "
     "'abc' (see forcematch train --help)"),
    (["train", "--config", "c", "--dataset-dir", "d", "--out-dir", "o", "--n-train", "0"],
     "argument --n-train: expected 'all' or a frame count >= 1, got '0'"),
    (["validate", "--config", "c", "--dataset-dir", "d", "--out-dir", "o", "--threads", "-2"],
     "forcematch validate: error: argument --threads: expected an integer >= 1, got '-2'"),
    (["train", "--config", "c", "--dataset-dir", "d", "--out-dir", "o", "--threads", "0"],
     "argument --threads: expected an integer >= 1, got '0'"),
    (["simulate", "--config", "c", "--out", "o", "--replica", "-1"],
     "forcematch simulate: error: argument --replica: expected an integer >= 0, got '-1'"),
    (["train", "--config", "c", "--dataset-dir", "d", "--out-dir", "o", "--devices", "x"],
     "argument --devices: expected an integer >= 0, got 'x'"),
    (["figures", "--validate-dirs", "v"],
     "forcematch figures: error: the following arguments are required: --train-dirs, "
     "--out-dir"),
    (["nonsense"], "forcematch: error: argument command: invalid choice: 'nonsense'"),
])
def test_bad_arguments_give_one_line(capsys, argv, message):
    assert message in one_line_error(capsys, argv)


def test_help_still_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--n-train" in capsys.readouterr().out


def test_limit_threads_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("MKL_NUM_THREADS", "16")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    cli.limit_threads(1)
    for var in commands.THREAD_VARIABLES:
        assert os.environ[var] == "1", var
    assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                       "--xla_cpu_multi_thread_eigen=false")
    cli.limit_threads(4)
    assert os.environ["OMP_NUM_THREADS"] == "4"
    assert os.environ["XLA_FLAGS"].count("xla_cpu_multi_thread_eigen") == 1
    monkeypatch.delenv("XLA_FLAGS")
    cli.limit_threads(2)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true"


@pytest.mark.parametrize("user, appended", [
    # several flags, doubled and trailing spaces, a quoted value: kept exactly, flag appended
    ('--xla_force_host_platform_device_count=2   --xla_dump_to="/tmp/x y"  '
     "--xla_cpu_enable_fast_math=false  ", "--xla_cpu_multi_thread_eigen=false"),
    ("  --xla_backend_optimization_level=1\t--xla_cpu_use_thunk_runtime=false",
     " --xla_cpu_multi_thread_eigen=false"),
    # the user's own thread flag (as a value or bare, both of which XLA reads) is the user's
    ("--xla_cpu_use_thunk_runtime=false  --xla_cpu_multi_thread_eigen=true ", ""),
    ("--xla_cpu_multi_thread_eigen  --xla_cpu_use_thunk_runtime=false", ""),
    # a longer flag that begins with its name is another flag
    ("--xla_cpu_multi_thread_eigen_foo=1", " --xla_cpu_multi_thread_eigen=false"),
])
def test_limit_threads_keeps_the_users_xla_flags_verbatim(monkeypatch, user, appended):
    monkeypatch.setenv("XLA_FLAGS", user)
    cli.limit_threads(1)
    assert os.environ["XLA_FLAGS"].startswith(user)
    assert os.environ["XLA_FLAGS"] == user + appended


def test_the_console_script_keeps_the_rules_threads(tmp_path):
    """A real process: OMP_NUM_THREADS exported as 8, `--threads 1`: the stage sees 1, and
    JAX starts under the XLA_FLAGS given, forcematch's flag appended."""
    user = "--xla_force_host_platform_device_count=2   --xla_cpu_enable_fast_math=false "
    code = ("import os, sys; from forcematch import cli; cli.limit_threads(1); "
            "import jax; print(os.environ['OMP_NUM_THREADS'], len(jax.devices('cpu'))); "
            "print(os.environ['XLA_FLAGS'])")
    env = os.environ | {"OMP_NUM_THREADS": "8", "XLA_FLAGS": user, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    assert out == ["1 2", user + "--xla_cpu_multi_thread_eigen=false"]


def failing_stage(error):
    def stage(args):
        raise error
    return stage


@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/x.csv"),
     "forcematch figures: error: No space left on device: /data/run/x.csv; check the "
     "permissions and free space of the output directory, then rerun"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/run"),
     "forcematch figures: error: Permission denied: /data/run; check"),
    (OutputError("/data/run/metrics.json", OSError(errno.EDQUOT, "Disk quota exceeded")),
     "forcematch figures: error: cannot write /data/run/metrics.json: Disk quota exceeded; free "
     "some space or raise the disk quota, then rerun"),
])
def test_refused_writes_give_one_line(capsys, monkeypatch, error, message):
    monkeypatch.setattr(commands, "cmd_figures", failing_stage(error))
    argv = ["figures", "--validate-dirs", "v", "--train-dirs", "t", "--out-dir", "o"]
    assert one_line_error(capsys, argv).startswith(message)


@pytest.mark.parametrize("error", [KeyError("model"), OSError(errno.EBADF, "Bad file"),
                                   FileNotFoundError(errno.ENOENT, "No such file", "x")])
def test_bugs_keep_their_traceback(monkeypatch, error):
    """Only well-identified refusals become one line: anything else is a bug to see whole."""
    monkeypatch.setattr(commands, "cmd_figures", failing_stage(error))
    with pytest.raises(type(error)):
        cli.main(["figures", "--validate-dirs", "v", "--train-dirs", "t", "--out-dir", "o"])


def test_model_path_that_is_a_file(capsys, tiny_data, tmp_path):
    (tmp_path / "model").write_text("not a directory")
    err = one_line_error(capsys, ["validate", "--config", tiny_data.config, "--dataset-dir",
                                  tiny_data.dataset, "--model", tmp_path / "model", "--out-dir",
                                  tmp_path / "val"])
    assert err.endswith(f"model {tmp_path / 'model'} is not a directory")
    assert not Path(tmp_path / "val").exists()


def test_a_real_refused_write_gives_one_line(tiny_data, tmp_path):
    """The kernel refuses a write (here RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC):
    `forcematch train` exits 2 with one line naming the file and what to do."""
    exe = Path(sys.executable).parent / "forcematch"
    out = tmp_path / "run"
    argv = [str(exe), "train", "--config", str(tiny_data.config), "--dataset-dir",
            str(tiny_data.dataset), "--out-dir", str(out)]
    # Set the limit in a fresh interpreter that then becomes `forcematch` (exec): no fork of
    # this multithreaded (JAX) process with a preexec_fn.
    limited = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
               "(1024, 1024)); os.execv(sys.argv[1], sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", limited, *argv], capture_output=True,
                            text=True, timeout=600, check=False)
    err = result.stderr.strip()
    assert result.returncode == 2, err[-3000:]
    assert len(err.splitlines()) == 1, err[-3000:]
    # the first file train writes: the report of the checks before training
    assert err.startswith(f"forcematch train: error: cannot write {out / 'preflight.json'}"), err
    assert "File too large; raise the file-size limit (ulimit -f)" in err, err
    assert err.endswith("then rerun (no step was checkpointed yet)"), err


def test_compilation_cache_defaults_and_respects_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    commands.use_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "forcematch" / "jax")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    commands.use_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"
