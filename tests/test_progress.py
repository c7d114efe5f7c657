"""Progress people can watch: a tqdm bar (rate, ETA) on a terminal, plain lines in a log, and
nothing but errors with --quiet, for a real `forcematch simulate` in a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from conftest import TINY

FORCEMATCH = [sys.executable, "-m", "forcematch.cli"]


def run_on_terminal(argv: list[str]) -> tuple[int, str]:
    """(exit status, what the command wrote to its terminal): stdout and stderr on a
    pseudo-terminal of 120 columns (a new one has 0, where tqdm draws nothing)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(argv, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while select.select([master], [], [], 300)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        out += data
    os.close(master)
    return process.wait(timeout=60), out.decode(errors="replace")


def simulate(tmp_path: Path, replica: int, *extra: str) -> list[str]:
    return [*FORCEMATCH, "simulate", "--config", str(TINY), "--replica", str(replica),
            "--out", str(tmp_path / f"replica_{replica}.h5"), *extra]


def test_a_terminal_gets_a_bar_a_log_gets_lines_quiet_gets_nothing(tmp_path):
    status, terminal = run_on_terminal(simulate(tmp_path, 0))
    assert status == 0, terminal
    assert "replica 0:" in terminal and "frame/s" in terminal, terminal  # tqdm: rate, ETA
    log = subprocess.run(simulate(tmp_path, 1), capture_output=True, text=True, timeout=300)
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    assert sum("steps/s, ETA" in line for line in lines) == 10  # every tenth of the frames
    assert "frame/s" not in log.stdout + log.stderr and "\r" not in log.stderr  # no bar
    status, terminal = run_on_terminal(simulate(tmp_path, 2, "--quiet"))
    assert status == 0 and terminal.strip() == "", terminal
    assert (tmp_path / "replica_2.h5").is_file()
    # errors still show
    status, terminal = run_on_terminal(simulate(tmp_path, 7, "--quiet"))
    assert status == 2 and "--replica 7 is outside 0..2" in terminal, terminal
