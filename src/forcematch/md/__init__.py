"""Molecular dynamics with a trained model or the OpenMM reference, and the checks a user judges
a potential by.

    record.py     Segment (what one run recorded), stability limits, the failure test
    engine.py     JAX MD integrators driving any trained model (NVE, BAOAB Langevin), compiled
                  in chunks of steps, with a skin neighbour list that never overflows silently
    reference.py  the same runs through OpenMM (the reference Lennard-Jones system)
    protocol.py   equilibrate, NVE at several time steps, NVT at T and at a hotter T
    checks.py     momentum, energy drift, RDF, pressure: pure functions of Segments
"""
