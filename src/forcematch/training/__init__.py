"""Training: the loop (`loop.train`), its optimiser, batch order, devices and checkpoint files.

Nothing outside this package imports it except the `forcematch train` and `diagnose-collapse`
stages; consumers of a trained model use `forcematch.potential.load_model`.
"""

from forcematch.training.loop import Trainer, train

__all__ = ["Trainer", "train"]
