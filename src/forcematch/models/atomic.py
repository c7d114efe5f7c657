"""The `atomic` model: a Behler–Parrinello-style atom-centred potential.

    E = Σ_i E_i,   E_i = b_{s_i} + NNθ(D_i) − NNθ(D_isolated)

`D_i` is a descriptor of the neighbourhood of atom i within the cutoff; `NNθ` is one MLP with
smooth activations, shared by all atoms (one output per species with `n_species` > 1); `b_s` is a
learned energy per atom of species s (initially 0, as in `pair`). Subtracting the network at
the descriptor of an isolated atom (all sums empty) makes an isolated atom's energy exactly b_s.

Descriptors (f_c = `space.smooth_cutoff`, the C2 envelope; g_k Gaussians as `pair`'s basis):

    radial     G_ik   = Σ_j g_k(r_ij) f_c(r_ij)                      k = 1 … n_radial
    angular    A_iabl = Σ_{j,k} R_a(r_ij) R_b(r_ik) P_l(cos θ_jik)    a ≤ b ≤ n_angular,
                                                                      l = 1 … l_max

with R_a the `n_angular` Gaussians (spread over the same range) times f_c, and P_l the Legendre
polynomials; the double sum includes j = k. The angular terms are computed exactly and in O(pairs)
through the addition theorem: with real spherical harmonics normalised so that
Σ_m Y_lm(u) Y_lm(v) = P_l(u·v),  A_iabl = Σ_m M_ialm M_iblm  with  M_ialm = Σ_j R_a(r_ij)
Y_lm(r̂_ij), a SOAP-like power spectrum of Legendre moments of cos θ_ijk (no triplet list). With
`n_species` S > 1 each sum over neighbours is split by the neighbour's species (S·n channels).

The descriptor is standardised per component with the mean and std over the atoms of the frame
given to `init`; these are stored in the parameters (`descriptor_mean`, `descriptor_scale`) and
held fixed by `jax.lax.stop_gradient`, so they travel with checkpoints and Adam never moves them.

Only minimum-image displacements enter, through the half neighbour list of `space`; each pair's
terms are scattered to both atoms (the neighbour direction flips sign, Y_lm(−u) = (−1)^l Y_lm(u)).
So the energy is invariant to translation, rotation, permutation and periodic images, and C2 at
the cutoff; the energy is NaN (and its gradient) when the neighbour list overflows. Forces are
−∇ Σ_i E_i by autodiff (`models.forces_fn`); they sum to zero up to round-off because E depends
only on differences of positions. `atom_energies` gives the E_i themselves.

Defaults (chosen on the default data, 100 argon atoms, cutoff 0.8 nm): 24 radial Gaussians on
[0.25 nm, cutoff] (the default sweep's setting; r_min_nm 0.0 measured 0.54 % against 0.62 %),
2 angular channels with l ≤ 2 (30 descriptors), a [32, 32] silu network. Train
settings for it: learning_rate 2e-2, batch 8, 2-3 epochs; joint loss (energy_weight 0.01) or
forces only then give a test force RMSE of 0.54 % (2 epochs) / 0.40 % (3 epochs) of the force
std, 2 % being reached within the first epoch; it trains about as fast as the default pair
model. The angular moments cost more than the radial sums: l_max 0 trains ~1.8x faster and is
as accurate on this pair-potential data; 4 angular channels or l_max 3 (wider per-pair features)
train 2-4x slower for no gain. Trained on total energies alone (energy_weight 1,
force_weight 0, energy_loss "centred", 6 epochs) its forces reach 1.3 % of the force std; the
uncentred ("absolute") energy loss gives 5.6 %.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.models.base import NeighbourListModel, poison_on_overflow
from forcematch.models.layers import ACTIVATIONS, MLP, gaussian_basis

L_MAX_SUPPORTED = 4  # `real_harmonics` degrees: the config schema's maximum of model.atomic.l_max


def real_harmonics(u, l_max: int):
    """Real spherical harmonics of unit vectors u [P,3], degrees 1 … l_max, normalised so that
    Σ_m Y_lm(u) Y_lm(v) = P_l(u·v). Returns a list of l_max arrays, [P, 2l+1] each."""
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    out = [jnp.stack([x, y, z], axis=1)]
    if l_max >= 2:
        s3 = math.sqrt(3.0)
        out.append(jnp.stack([s3 * x * y, s3 * y * z, 0.5 * (3 * z * z - 1), s3 * x * z,
                              0.5 * s3 * (x * x - y * y)], axis=1))
    if l_max >= 3:
        c1, c2, c3 = math.sqrt(10.0) / 4, math.sqrt(15.0), math.sqrt(6.0) / 4
        z2 = z * z
        out.append(jnp.stack([c1 * y * (3 * x * x - y * y), c2 * x * y * z,
                              c3 * y * (5 * z2 - 1), 0.5 * z * (5 * z2 - 3),
                              c3 * x * (5 * z2 - 1), 0.5 * c2 * z * (x * x - y * y),
                              c1 * x * (x * x - 3 * y * y)], axis=1))
    if l_max >= 4:
        z2, x2, y2 = z * z, x * x, y * y
        c1, c2 = math.sqrt(35.0) / 2, math.sqrt(17.5) / 2
        c3, c4 = math.sqrt(5.0) / 2, math.sqrt(2.5) / 2
        out.append(jnp.stack([c1 * x * y * (x2 - y2), c2 * y * z * (3 * x2 - y2),
                              c3 * x * y * (7 * z2 - 1), c4 * y * z * (7 * z2 - 3),
                              (35 * z2 * z2 - 30 * z2 + 3) / 8, c4 * x * z * (7 * z2 - 3),
                              0.5 * c3 * (x2 - y2) * (7 * z2 - 1), c2 * x * z * (x2 - 3 * y2),
                              0.25 * c1 * (x2 * (x2 - 3 * y2) - y2 * (3 * x2 - y2))], axis=1))
    return out


class AtomicModel(NeighbourListModel):
    """Atom-centred network potential; see the module docstring. Implements `EnergyModel`."""

    name = "atomic"

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        """`config`: the complete `model.atomic` options (`config.model_settings`)."""
        super().__init__(config, cutoff_nm, capacity)
        self._mlp = MLP(hidden=tuple(config["hidden"]), n_out=config["n_species"],
                        activation=ACTIVATIONS[config["activation"]])
        self._descriptors_jit = jax.jit(self.descriptors)  # for init (compiled once per shape)

    @property
    def n_descriptors(self) -> int:
        """Length of the per-atom descriptor D_i."""
        s, cfg = self.config["n_species"], self.config
        c = s * cfg["n_angular"]
        return s * cfg["n_radial"] + (c * (c + 1) // 2) * cfg["l_max"]

    # -- descriptors -----------------------------------------------------------------------
    def descriptors(self, positions_nm, box_nm, species, pairs=None):
        """Raw (unstandardised) descriptors D [N, n_descriptors] and the overflow flag."""
        cfg, n = self.config, positions_nm.shape[0]
        s = cfg["n_species"]
        i, j, mask, overflow = self._pairs(positions_nm, box_nm, pairs)
        d = space.displacement(positions_nm[i], positions_nm[j], box_nm)  # r_i − r_j, [P,3]
        r2 = jnp.where(mask, jnp.sum(d * d, axis=-1), jnp.asarray(self.cutoff_nm**2, d.dtype))
        r = jnp.sqrt(r2)  # masked before the sqrt: padded slots sit at the cutoff
        env = space.smooth_cutoff(r, self.cutoff_nm) * mask  # [P], 0 on padding
        sp = jnp.asarray(species, jnp.int32)
        sp_i, sp_j = sp[i], sp[j]

        def per_species(values, other):  # [P, C] -> [P, S*C]: the block of the other's species
            if s == 1:
                return values
            onehot = jax.nn.one_hot(other, s, dtype=values.dtype)
            return (onehot[:, :, None] * values[:, None, :]).reshape(values.shape[0], -1)

        g = gaussian_basis(r, cfg["n_radial"], cfg["r_min_nm"], self.cutoff_nm) * env[:, None]
        feats, signs = [g], [jnp.ones(cfg["n_radial"], d.dtype)]
        n_ang = s * cfg["n_angular"]
        if cfg["l_max"] > 0:
            ra = gaussian_basis(r, cfg["n_angular"], cfg["r_min_nm"], self.cutoff_nm)
            ra = ra * env[:, None]  # [P, A]
            u = d / r[:, None]  # unit vector from j to i; zero on padding (d = 0)
            for deg, y in enumerate(real_harmonics(u, cfg["l_max"]), start=1):
                feats.append((ra[:, :, None] * y[:, None, :]).reshape(r.shape[0], -1))
                # atom i sees j in direction −u: Y_lm(−u) = (−1)^l Y_lm(u)
                signs.append(jnp.full(cfg["n_angular"] * (2 * deg + 1), (-1.0) ** deg, d.dtype))
        f = jnp.concatenate(feats, axis=1)  # [P, F]: each pair's terms, as seen from atom j
        # Sums over the neighbours of each atom, [N, S, F]: both ends of every pair.
        sums = (jax.ops.segment_sum(per_species(f * jnp.concatenate(signs), sp_j), i, n)
                + jax.ops.segment_sum(per_species(f, sp_i), j, n)).reshape(n, s, -1)
        parts = [sums[:, :, : cfg["n_radial"]].reshape(n, -1)]
        start, iu = cfg["n_radial"], jnp.triu_indices(n_ang)
        for deg in range(1, cfg["l_max"] + 1):
            width = cfg["n_angular"] * (2 * deg + 1)
            m = sums[:, :, start : start + width].reshape(n, n_ang, 2 * deg + 1)  # M_ialm
            start += width
            power = jnp.einsum("nam,nbm->nab", m, m)  # Σ_m M_a M_b: the Legendre moments
            parts.append(power[:, iu[0], iu[1]])
        return jnp.concatenate(parts, axis=1), overflow

    def _nn(self, params, raw):
        """Per-atom network outputs [N, S] of raw descriptors [N, D] (standardised first)."""
        mean = jax.lax.stop_gradient(params["descriptor_mean"])
        scale = jax.lax.stop_gradient(params["descriptor_scale"])
        return self._mlp.apply(params["mlp"], (raw - mean) * scale)

    # -- EnergyModel interface -------------------------------------------------------------
    def init(self, rng, positions_nm, box_nm, species):
        """Parameters (float32): network, per-species constants, and the descriptor
        standardisation from the atoms of this frame (positions [N,3] nm, box [3] nm)."""
        n_desc = self.n_descriptors
        raw, overflow = self._descriptors_jit(jnp.asarray(positions_nm), jnp.asarray(box_nm),
                                              jnp.asarray(species, jnp.int32))
        raw = raw.astype(jnp.float32)
        mean, std = jnp.mean(raw, axis=0), jnp.std(raw, axis=0)
        ok = jnp.all(jnp.isfinite(raw)) & ~overflow & (raw.shape[0] > 1)
        # Components that barely vary in this frame (e.g. Gaussians below the closest contact)
        # get a floor relative to the largest spread, so they cannot blow up elsewhere.
        floor = jnp.maximum(0.01 * jnp.max(jnp.where(ok, std, 0.0)), 1e-6)
        mean = jnp.where(ok, mean, 0.0)
        scale = jnp.where(ok, 1.0 / jnp.maximum(std, floor), 1.0)
        return {
            "mlp": self._mlp.init(rng, jnp.zeros((1, n_desc), jnp.float32)),
            "atom_energy": jnp.zeros(self.config["n_species"], jnp.float32),
            "descriptor_mean": mean,
            "descriptor_scale": scale,
        }

    def atom_energies(self, params, positions_nm, box_nm, species, pairs=None):
        """Per-atom energies E_i [N] (model units; NaN on neighbour overflow).

        Their sum is `energy`; in kJ/mol, E_i × energy_scale + energy_shift_per_atom with the
        `models.Normalisation` of the trained model. Forces come from the sum, −∇ Σ_i E_i.
        """
        n = positions_nm.shape[0]
        raw, overflow = self.descriptors(positions_nm, box_nm, species, pairs)
        out = self._nn(params, raw)  # [N, S]
        iso = self._nn(params, jnp.zeros((1, raw.shape[1]), raw.dtype))  # [1, S]
        sp = self._species_index(species, n)
        e = jnp.take_along_axis(out - iso, sp[:, None], axis=1)[:, 0] + params["atom_energy"][sp]
        return poison_on_overflow(e, overflow, positions_nm)

    def energy(self, params, positions_nm, box_nm, species, pairs=None):
        """Σ_i E_i (model units); NaN (and NaN gradient) on neighbour overflow."""
        return jnp.sum(self.atom_energies(params, positions_nm, box_nm, species, pairs))
