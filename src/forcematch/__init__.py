"""forcematch: reference Lennard-Jones argon to validated, force-matched JAX potentials."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("forcematch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
