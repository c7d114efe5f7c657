"""`fit()`: one training run of any model family, the entry point of `forcematch train`.

A `spline` model is fitted by linear least squares (`forcematch.linear`), every other family
trained by gradient descent (`forcematch.training`); both write the same run directory. The
choice lives here, above both packages, so that neither imports the other's entry point.
"""

from __future__ import annotations

from pathlib import Path

from forcematch.calculators.tables import PAIR_FAMILIES, PAIR_TABLE, write_pair_table
from forcematch.config import train_settings
from forcematch.linear.run import fit_spline_run
from forcematch.training import train


def fit(train_data, val_data, settings, model_config, cutoff_nm, out_dir, **options) -> dict:
    """Fit or train the model family `settings["model"]`; arguments as
    `training.run.train` (the spline fit takes stats, provenance, progress and species_names
    of its `options` and has no devices, resume or preflight); returns the final metrics. A
    pair family's run also writes its φ(r) and F(r) to out_dir/model/pair_table.csv
    (`calculators.tables.write_pair_table`), what the figures plot."""
    family = train_settings(dict(settings or {}))["model"]
    if family == "spline":
        spline_options = ("stats", "provenance", "progress", "species_names")
        final = fit_spline_run(train_data, val_data, settings, model_config, cutoff_nm,
                               out_dir, **{k: v for k, v in options.items()
                                           if k in spline_options})
    else:
        final = train(train_data, val_data, settings, model_config, cutoff_nm, out_dir,
                      **options)
    if family in PAIR_FAMILIES:
        model_dir = Path(out_dir) / "model"
        write_pair_table(model_dir, model_dir / PAIR_TABLE)
    return final
