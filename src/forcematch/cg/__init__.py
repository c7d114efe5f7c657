"""Coarse-graining: linear maps with their force maps (`mapping`), the exact mean force on CG
frames sampled with OpenMM (`mean_force`), and the split of a CG model's force-matching loss into
the noise floor and the model's own error (`split`). No JAX here."""
