"""`graph_network`: JAX MD's graph network (`jax_md.energy.EnergyGraphNet`), the model of JAX
MD's `neural_networks.ipynb` notebook, as a model family.

    nodes: zeros [N, 1] (one species) or one-hot species [N, S]
    edges: raw displacement vectors d_ij (in `length_unit`) for every pair with r_ij < r_c,
           self-pairs included (JAX MD's `graph_network_neighbor_list` builds its neighbour list
           with mask_self=False); nothing makes the edge features go to zero at r_c
    E = MLP_decoder(globals after `n_recurrences` rounds of edge, node and global updates)

Three traits set it apart from the other families: the features are raw displacements (not
rotation invariant: the symmetry must be learnt), the cutoff is hard (the energy jumps when a
pair crosses r_c, a jump autodiff forces never see), and the energy is one global readout, not a
sum of per-atom or per-pair terms. It sees only minimum-image displacements, so it is invariant
to translation and its forces sum to zero.

The network itself is JAX MD's (`GraphNetEncoder` and `GlobalDecoder` of `EnergyGraphNet`, an
NNX module); this module supplies what the family interface needs around it: the pairs come
from `space.neighbour_pairs` (a static capacity, overflow poisons the energy), turned into
JAX MD's sparse graph by `jax_md.energy.neighbor_graph_input`, with the frame's own box (edges
or a general cell: `space.displacement`, equal to JAX MD's `space.periodic` for edges), so
one compiled function serves every frame. Parameters are the module's state as a plain nested
dict (`nnx.split`), merged back (`nnx.merge`) inside the energy function.

With the notebook's recipe (`config/config.yaml`, `train_by_model.graph_network`: raw output
in eV, loss on raw total energies in eV and per-frame summed squared force errors in (eV/Å)²,
Adam 10⁻³ after global-norm clipping at 1, batch 128) see docs/tutorials/collapse.md ("My
force-only training collapses to zero forces").
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.models.base import NeighbourListModel, poison_on_overflow
from forcematch.models.layers import ACTIVATIONS

LENGTH_PER_NM = {"nm": 1.0, "angstrom": 10.0}


def _notebook_initialisers() -> dict:
    """The initialisers of the haiku-era JAX MD that the notebook ran (`EnergyGraphNet`'s
    default `mlp_kwargs`): weights `hk.initializers.VarianceScaling()` (scale 1, fan-in,
    truncated normal) and biases `VarianceScaling(0.1)`, which for a bias of width n is a
    truncated normal of standard deviation sqrt(0.1 / n) (haiku takes n as the fan-in of a
    vector). JAX MD 0.2.29 (NNX) initialises weights by fan-average and biases at zero."""
    from jax.nn.initializers import variance_scaling

    weights = variance_scaling(1.0, "fan_in", "truncated_normal")
    bias_matrix_init = variance_scaling(0.1, "fan_in", "truncated_normal")

    def biases(key, shape, dtype=jnp.float32):
        (n,) = shape  # a [n, n] draw's fan-in is n: the same scale as haiku's vector rule
        return bias_matrix_init(key, (n, n), dtype)[0]

    return {"kernel_init": weights, "bias_init": biases}


INITIALISERS = {"notebook": _notebook_initialisers, "jax_md_nnx": dict}


def _jax_md():
    """JAX MD's energy and partition modules (imported on first use: ~2 s)."""
    from forcematch import jax_md_modules

    return jax_md_modules.load("energy", "partition")


class GraphNetworkModel(NeighbourListModel):
    """JAX MD's graph network; see the module docstring. Implements `models.EnergyModel`."""

    name = "graph_network"

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        """`config`: the complete `model.graph_network` options (`config.model_settings`);
        `cutoff_nm`: the graph's hard cutoff (nm)."""
        super().__init__(config, cutoff_nm, capacity)
        self._scale = LENGTH_PER_NM[config["length_unit"]]
        self._graphdef = self._network(jax.random.PRNGKey(0), config["n_species"])[0]

    def _network(self, key, n_species: int):
        """(graphdef, state as a plain dict) of a freshly initialised `EnergyGraphNet`."""
        from flax import nnx

        energy, partition = _jax_md()
        net = energy.EnergyGraphNet(
            None, self.cutoff_nm * self._scale, key=key,
            in_node_features=1 if n_species == 1 else n_species, in_edge_features=3,
            n_recurrences=self.config["n_recurrences"],
            mlp_sizes=tuple(self.config["mlp_sizes"]),
            activation=ACTIVATIONS[self.config["activation"]], format=partition.Sparse,
            **INITIALISERS[self.config["initialisation"]]())
        graphdef, state = nnx.split(net)
        return graphdef, nnx.to_pure_dict(state)

    def _nodes(self, species, n_atoms: int, dtype):
        s = self.config["n_species"]
        if s == 1:
            return jnp.zeros((n_atoms, 1), dtype)
        return jax.nn.one_hot(jnp.asarray(species, jnp.int32), s, dtype=dtype)

    def _edges(self, positions_nm, box_nm, pairs=None):
        """JAX MD sparse neighbour indices [2, 2P + N] (receivers, senders; N = padding), both
        directions of every pair within the cutoff and every self-pair, and the overflow flag."""
        n = positions_nm.shape[0]
        i, j, mask, overflow = self._pairs(positions_nm, box_nm, pairs)
        atoms = jnp.arange(n, dtype=i.dtype)
        valid = jnp.concatenate([mask, mask, jnp.ones(n, bool)])
        idx = jnp.where(valid, jnp.stack([jnp.concatenate([i, j, atoms]),
                                          jnp.concatenate([j, i, atoms])]), n)
        # Real edges first: jraph assigns the first n_edge[0] edges to the real graph when it
        # sums them into the globals (the rest to the padding graph).
        return idx[:, jnp.argsort(~valid, stable=True)], overflow

    # -- EnergyModel interface -------------------------------------------------------------
    def init(self, rng, positions_nm, box_nm, species):
        """The network's parameters: a nested dict of float32 arrays."""
        del positions_nm, box_nm, species
        return self._network(rng, self.config["n_species"])[1]

    def energy(self, params, positions_nm, box_nm, species, pairs=None):
        """Scalar energy (model units); NaN on neighbour-list overflow."""
        from flax import nnx

        energy, partition = _jax_md()
        net = nnx.merge(self._graphdef, params)
        idx, overflow = self._edges(positions_nm, box_nm, pairs)
        positions = positions_nm * self._scale
        cell = box_nm * self._scale  # edges [3] or a general cell [3,3] (Å)

        def displacement(Ra, Rb, **unused):  # as JAX MD's space.periodic for edges [3]
            return space.displacement(Ra, Rb, cell)

        nodes = self._nodes(species, positions.shape[0], positions.dtype)
        neighbours = types.SimpleNamespace(idx=idx, reference_position=positions,
                                           format=partition.Sparse)
        # EnergyGraphNet.__call__ with the frame's box: graph, encoder, global decoder.
        graph = energy.neighbor_graph_input(displacement, self.cutoff_nm * self._scale, 0.0,
                                            partition.Sparse, nodes, positions, neighbours)
        globals_ = net.GraphNetEncoder(graph).globals
        e = jnp.squeeze(net.GlobalDecoder(globals_), axis=-1)[0]
        return poison_on_overflow(e, overflow, positions_nm)
