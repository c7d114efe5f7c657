"""Symmetry checks shared by the model tests: every family must pass the same ones."""

import jax.numpy as jnp
import numpy as np


def assert_rotation_invariant(ef, params, pos, box, species, atol_rel):
    """90° about each axis of a cubic box maps the lattice of images onto itself: the energy is
    unchanged and the forces rotate with the positions."""
    e0, f0 = ef(params, pos, box, species)
    for axis in range(3):
        rot = np.eye(3)
        a, b = [k for k in range(3) if k != axis]
        rot[[a, a, b, b], [a, b, a, b]] = [0.0, -1.0, 1.0, 0.0]
        rot = jnp.asarray(rot)
        e1, f1 = ef(params, pos @ rot.T, box, species)
        np.testing.assert_allclose(e1, e0, rtol=1e-12)
        np.testing.assert_allclose(f1, f0 @ rot.T, atol=atol_rel * float(jnp.abs(f0).max()))


def assert_permutation_and_image_invariant(ef, params, pos, box, species, box_nm, atol_rel):
    """Relabelling atoms permutes the forces; moving atoms by box vectors changes nothing."""
    e0, f0 = ef(params, pos, box, species)
    perm = np.random.default_rng(0).permutation(pos.shape[0])
    e1, f1 = ef(params, pos[perm], box, species)
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0[perm], atol=atol_rel * float(jnp.abs(f0).max()))
    shifted = pos.at[5].add(jnp.array([box_nm, -2 * box_nm, 0.0])).at[17].add(
        jnp.array([0, 0, box_nm]))
    e2, f2 = ef(params, shifted, box, species)
    np.testing.assert_allclose(e2, e0, rtol=1e-12)
    np.testing.assert_allclose(f2, f0, atol=atol_rel * float(jnp.abs(f0).max()))
