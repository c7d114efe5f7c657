"""Training: the run (`run.train`), its loop (`loop.Trainer`), optimiser, batch order, devices,
checkpoint files and the lock that keeps one live trainer per checkpoint.

Nothing outside this package imports it except the `forcematch train` and `diagnose-collapse`
stages; consumers of a trained model use `forcematch.potential.load_model`.
"""

from forcematch.training.loop import Trainer
from forcematch.training.run import train

__all__ = ["Trainer", "train"]
