"""The reference's virial per frame: the label that lets a model learn how its energy changes
with volume and shape, not only with positions.

    W = −∂U/∂ε at ε = 0   [3, 3] kJ/mol

for a symmetric strain ε acting on positions and box alike (U(x·(1+ε), box·(1+ε))). It is the
configurational virial: the pressure is P = (2K + tr W) / (3V) and the configurational stress
σ = −W/V (ASE's sign). OpenMM gives energies and forces but no virial; for the pair potential
it applies, W = Σ_{i<j} F(r) d⊗d / r with d = x_i − x_j (minimum image) and F = −dφ/dr, summed
in float64 over the pairs within the cutoff (`reference.system.switched_lj_pair`, the potential
OpenMM applies). The dispersion (tail) correction is left out, as in MD's pressure
(`md.reference.strain_derivative_kJ_mol`): a model with a cutoff trained at one density learns
no volume-dependent tail. The tests hold W against finite differences of OpenMM's own energy
under normal and shear strains.
"""

from __future__ import annotations

import numpy as np

from forcematch.data.pairs import frame_pairs, species_pairs
from forcematch.reference.system import LJSystem, switched_lj_pair


def frame_virial_kJ_mol(lj: LJSystem, positions_nm: np.ndarray, box_nm: np.ndarray
                        ) -> np.ndarray:
    """W [3, 3] kJ/mol of one frame: positions [N, 3] nm in an orthorhombic box [3] nm."""
    i, j, d, r = frame_pairs(positions_nm, box_nm, lj.cutoff_nm)
    species = lj.species
    a, b = np.minimum(species[i], species[j]), np.maximum(species[i], species[j])
    force_over_r = np.empty_like(r)
    for sa, sb in species_pairs(lj.n_species):
        mask = (a == sa) & (b == sb)
        force_over_r[mask] = switched_lj_pair(lj, sa, sb, r[mask])[1] / r[mask]
    return np.einsum("p,pa,pb->ab", force_over_r, d, d)


def virial_kJ_mol(lj: LJSystem, positions_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """W [T, 3, 3] kJ/mol of frames: positions [T, N, 3] nm, box edges [T, 3] (or [3]) nm."""
    positions = np.asarray(positions_nm, np.float64)
    box = np.broadcast_to(np.asarray(box_nm, np.float64), (positions.shape[0], 3))
    out = np.empty((positions.shape[0], 3, 3))
    for k in range(positions.shape[0]):
        out[k] = frame_virial_kJ_mol(lj, positions[k], box[k])
    return out
