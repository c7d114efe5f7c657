"""The one accuracy accumulator: chunked running sums equal the one-shot numpy formulas."""

import math

import numpy as np
import pytest

from forcematch.metrics import UNITS, Accuracy, accuracy, virial_accuracy


def test_chunks_in_any_order_equal_numpy_on_all_frames():
    rng = np.random.default_rng(0)
    f_ref = rng.normal(0.0, 40.0, size=(50, 7, 3))
    f_pred = 0.9 * f_ref + rng.normal(0.0, 3.0, size=f_ref.shape)
    e_ref = rng.normal(-500.0, 5.0, size=50)
    e_pred = e_ref + rng.normal(0.0, 0.5, size=50)
    acc = Accuracy(7)
    for chunk in np.array_split(rng.permutation(50), 6):
        acc.add(e_pred[chunk], f_pred[chunk], e_ref[chunk], f_ref[chunk])
    got = acc.result()
    df, de = f_pred - f_ref, (e_pred - e_ref) / 7
    want = {
        "force_rmse": np.sqrt(np.mean(df**2)),
        "force_mae": np.mean(np.abs(df)),
        "force_rmse_rel": np.sqrt(np.mean(df**2)) / f_ref.std(),
        "force_std_ref": f_ref.std(),
        "force_std_ratio": f_pred.std() / f_ref.std(),
        "force_corr": np.corrcoef(f_ref.ravel(), f_pred.ravel())[0, 1],
        "energy_mae_per_atom": np.mean(np.abs(de)),
        "energy_rmse_per_atom": np.sqrt(np.mean(de**2)),
    }
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got == accuracy(e_ref, e_pred, f_ref, f_pred) | {
        k: pytest.approx(v, rel=1e-12) for k, v in got.items()}
    # every reported number has its unit (the accumulator's and `virial_accuracy`'s)
    virial = virial_accuracy(np.zeros((2, 3, 3)), np.ones((2, 3, 3)), np.ones(3), 1)
    assert set(got) | set(virial) == set(UNITS)


def test_constant_reference_forces_give_nan_not_a_crash():
    f_ref = np.zeros((3, 4, 3))
    result = accuracy(np.zeros(3), np.zeros(3), f_ref, np.ones_like(f_ref))
    assert result["force_rmse"] == 1.0
    assert all(math.isnan(result[k]) for k in ("force_rmse_rel", "force_std_ratio",
                                                 "force_corr"))
