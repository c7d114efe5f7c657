"""Classic force matching: the `spline` family's fit by linear least squares (MS-CG).

    design.py   normal equations accumulated over chunks of frames (float64, never the whole
                design matrix), one set per block of frames
    fit.py      the regularised solve, conditioning, effective rank
    run.py      `fit_spline`: one run, writing what a trained run writes (model/, metrics.csv,
                final_metrics.json) plus fit.csv (φ, F and their block standard errors)

`forcematch.fit.fit` hands `spline` runs to `run.fit_spline_run`; every later stage loads
the result with `potential.load_model` like any other family.
"""
