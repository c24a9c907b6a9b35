"""SACD's structure branch (Han et al. 2022, Section IV-B, eqs. 6–11): a graph network over one mini-batch.

Every sample of the batch is a node and every pair of samples an edge (a complete graph without
self-loops), so the graph describes how the samples of one modality relate to each other. After a few
rounds of attention-weighted message passing the node states are read out into one 1024-d graph vector
O(G); the loss compares the video graph's vector with the EEG graph's. Node correspondence across the
two modalities is never used: the readout is a set function, which is why the paper calls the alignment
coarse-grained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


class PropagationLayer(nn.Module):
    """One round of eqs. 8–9 on a complete graph.

    The message MLP F_m acts on [h_i; h_j; e_ij] (eq. 8): a hidden layer of node_dim units and a 512-d
    output. Its first layer is linear in the concatenation,
    so it is computed as U_dst h_i + U_src h_j + U_e e_ij (per-node and per-edge products, broadcast) instead
    of materialising B² concatenations; its output layer is linear too and a node's attention weights sum
    to one, so Σ_j α_ij F_m(..) = W_out (Σ_j α_ij relu(..)) + b_out is applied to B aggregated rows, not to
    B² messages. Both rewrites are exact. A (eq. 9) is GAT-style attention: α_ij = softmax over j ≠ i of
    LeakyReLU(a_dst·h_i + a_src·h_j + a_e·e_ij). The aggregated 512-d message is mapped back to the 128-d
    node state by a residual update MLP, h_i ← h_i + MLP_u([h_i; m_i]) (GMN's "residual" node update).

    The node-side maps (U_dst, U_src, a_dst, a_src) share one matrix and the edge-side maps (U_e, a_e)
    another: the same arithmetic in fewer, larger products, which matters on a busy CPU.
    """

    def __init__(self, node_dim: int, edge_dim: int, message_dim: int) -> None:
        super().__init__()
        self.hidden = node_dim
        self.node_side = nn.Linear(node_dim, 2 * self.hidden + 2)    # [U_dst | U_src | a_dst | a_src]
        self.edge_side = nn.Linear(edge_dim, self.hidden + 1, bias=False)  # [U_e | a_e]
        self.msg_out = nn.Linear(self.hidden, message_dim)           # F_m's output layer, → 512
        self.update = _mlp(node_dim + message_dim, node_dim, node_dim)

    def edge_terms(self, e: Tensor) -> Tensor:
        """The edge parts of the message and of the attention score, (B, B, hidden + 1). Edges do not
        change across rounds, so the encoder computes this once per layer module."""
        return self.edge_side(e)

    def forward(self, h: Tensor, edge_terms: Tensor, neighbours: Tensor) -> Tensor:
        # h: (B, node_dim); edge_terms[i, j] belongs to the edge j → i; neighbours: (B, B), False on the diagonal
        k = self.hidden
        node = self.node_side(h)
        msg_dst, msg_src, att_dst, att_src = node[:, :k], node[:, k:2 * k], node[:, 2 * k:2 * k + 1], node[:, -1]
        score = F.leaky_relu(att_dst + att_src[None, :] + edge_terms[..., k], 0.2)  # row i = receiver
        alpha = torch.softmax(score.masked_fill(~neighbours, float("-inf")), dim=1)
        hidden = F.relu(msg_dst[:, None, :] + msg_src[None, :, :] + edge_terms[..., :k])
        message = self.msg_out(torch.einsum("ij,ijd->id", alpha, hidden))               # (B, message_dim)
        return h + self.update(torch.cat([h, message], dim=-1))


class BatchGraphEncoder(nn.Module):
    """G_v or G_s of eq. 2: features of one mini-batch (B, D) → one graph vector O(G) (graph_dim,).

    Eq. 6: node MLP, D → node_dim. Eq. 7: edge MLP, 2 → edge_dim, on the pair's relations (see
    ``pair_relations``). Eqs. 8–9: ``layers`` propagation rounds (parameters shared across rounds when
    ``share`` is set, as in the authors' unused GMN config). Eq. 10: READOUT = one fully connected layer,
    node_dim → node_dim, applied to every node (+ ReLU) and averaged over the nodes, then MLP_G, node_dim →
    node_dim → graph_dim. The mean makes O(G) invariant to the order of the samples and to the batch size;
    keeping the wide layer last keeps the parameter count (and the optimiser's work) small.
    """

    def __init__(self, in_dim: int, node_dim: int = 128, edge_dim: int = 64, message_dim: int = 512,
                 graph_dim: int = 1024, layers: int = 3, share: bool = True) -> None:
        super().__init__()
        self.node_mlp = _mlp(in_dim, node_dim, node_dim)
        self.edge_mlp = _mlp(2, edge_dim, edge_dim)
        n_modules = 1 if share else layers
        self.layers = nn.ModuleList(PropagationLayer(node_dim, edge_dim, message_dim) for _ in range(n_modules))
        self.rounds = layers
        self.readout = nn.Linear(node_dim, node_dim)
        self.graph_mlp = _mlp(node_dim, node_dim, graph_dim)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        h = self.node_mlp(x)
        if b > 1:  # a single node has no neighbour to hear from
            e = self.edge_mlp(pair_relations(x))
            neighbours = ~torch.eye(b, dtype=torch.bool, device=x.device)
            terms = [layer.edge_terms(e) for layer in self.layers]
            for t in range(self.rounds):
                h = self.layers[t % len(self.layers)](h, terms[t % len(self.layers)], neighbours)
        return self.graph_mlp(F.relu(self.readout(h)).mean(dim=0))


def pair_relations(x: Tensor) -> Tensor:
    """The edge input x_ij of eq. 7, (B, B, 2): the cosine of samples i and j and their squared distance
    divided by the batch's mean squared distance (RKD's normalisation). Both are invariant to the feature
    scale and mean the same thing in either modality, so the two graphs' edges speak one language."""
    b = x.shape[0]
    unit = F.normalize(x, dim=-1)
    cosine = unit @ unit.T
    sq = x.pow(2).sum(-1)
    self_pair = torch.eye(b, dtype=torch.bool, device=x.device)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0).masked_fill(self_pair, 0)
    mean = dist.sum() / (b * (b - 1))
    return torch.stack([cosine, dist / mean.clamp_min(1e-12)], dim=-1)


def squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """d of eq. 11: the squared Euclidean distance between two graph vectors."""
    return (a - b).pow(2).sum(-1)


def graph_margin_loss(o_v: Tensor, o_s: Tensor, negatives: list[tuple[Tensor, Tensor]], margin: float) -> Tensor:
    """Eq. 11 read as the pairwise margin loss of Graph Matching Networks: relu(γ − y·(1 − d)).

    y = +1 for the positive pair (the video and EEG graphs of the same samples) and −1 for each negative
    pair (graphs of different samples). With γ = 1 the positive term is d itself (pull together) and a
    negative term is relu(2 − d) (push apart to d ≥ 1 + γ). The expectation of eq. 11 is taken over a
    balanced set: half the weight on the positive pair, half spread over the negatives (GMN trains on
    equal numbers of both); with no negatives the loss is the positive term alone.
    """
    positive = F.relu(margin - 1 + squared_distance(o_v, o_s))
    if not negatives:
        return positive
    negative = torch.stack([F.relu(margin + 1 - squared_distance(a, b)) for a, b in negatives]).mean()
    return 0.5 * (positive + negative)
