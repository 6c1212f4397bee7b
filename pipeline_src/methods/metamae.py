"""``metamae``: Meta-learned MAE (Jang et al., NeurIPS 2023, §2.2, Algorithm 1).

Per step: random mask (support S = visible tokens, query Q = masked tokens); amortized latent
Z = f(S); one gradient step on Z (second order, ``create_graph=True``) on the reconstruction of
S plus the Nearby-S tokens N(S; r_s) ⊂ Q, |N| = round(r_s |Q|); the query loss with the adapted
Z* (eq. 2); plus lambda * the task-contrastive NT-Xent between projected pooled Z and Z* (eq. 3-5).

"Nearby" without a domain prior (``nearby: embedding``, the default): the paper picks the query
tokens near the support tokens. Here nearness is measured in the model's own learned
positional-embedding space (cosine similarity of P rows, a soft maximum over the sample's visible
positions), which needs no notion of adjacency in index order and permutes with the tokens, so the
method stays domain-agnostic (SMA eq. 1). ``nearby: index`` is the released code's choice: the
masked tokens at index i +- 1 of a visible token i, each kept with probability r; it assumes that
neighbours in index order belong together, so a run with it is marked not domain-agnostic.
With ``pos_embedding: sincos`` (the paper's fixed table) ``nearby: embedding`` still works: the
closeness is then measured on the fixed table (where it follows index distance).

The projection head h_psi (``projection``, ``projection_hidden``, ``projection_dim``): see
:func:`projector`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..batch import Batch, InputSpec
from ..models.attention import full_precision, score_dtype
from ..models.decoders import (SelfAttentionDecoder, TransformerDecoder, gather_tokens, per_sample_loss,
                               reconstruction_loss)
from ..models.encoders import decoder_dropout
from .base import Method, MethodOutput, masked_index
from .masking import num_masked, random_mask, rank_mask


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric NT-Xent: (a_i, b_i) positives, every other of the 2B vectors a negative. a, b: [B, d]."""
    z = F.normalize(torch.cat([a, b]), dim=-1)                        # [2B, d]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


@torch.no_grad()
def nearby_mask(pos: Tensor, visible: Tensor, candidates: Tensor, count: Tensor, sharpness: float = 10.0) -> Tensor:
    """The ``count[b]`` candidate positions closest to the visible set in positional-embedding space.

    pos: [N, D] positional table; visible, candidates: [B, N] bool; count: [B] -> bool [B, N].
    Closeness of j = log sum_{i visible} exp(sharpness * cos(P_i, P_j)), a soft max over i,
    computed in float32 (float64 stays float64) whatever the autocast, so that no ties come from
    bf16 rounding (they would be broken by position).
    """
    with full_precision(pos):
        p = F.normalize(pos.to(score_dtype(pos)), dim=-1)
        kernel = torch.exp(sharpness * (p @ p.t() - 1.0))            # [N, N] in (0, 1]
        score = torch.log(visible.to(kernel.dtype) @ kernel + 1e-30) # [B, N]
    return rank_mask(score, ~candidates, count, largest=True)


NEARBY = ("embedding", "index")


@torch.no_grad()
def index_nearby(visible: Tensor, candidates: Tensor, noise: Tensor, keep: float) -> Tensor:
    """The released code's Nearby-S: candidates at index i - 1 or i + 1 of a visible token i, each
    kept when its ``noise`` (uniform [B, N]) is below ``keep``. visible, candidates: [B, N] bool."""
    left = torch.zeros_like(visible)
    left[:, 1:] = visible[:, :-1]                                    # token i - 1 is visible
    right = torch.zeros_like(visible)
    right[:, :-1] = visible[:, 1:]                                   # token i + 1 is visible
    return (left | right) & candidates & (noise < keep)


PROJECTIONS = ("bn_relu", "bn")
# the decoder g_phi: "cross", each layer self-attention over the position queries then
# cross-attention to the latent; "self", MetaMAE Table 7 / its released code (MAE's decoder):
# self-attention over every position holding its visible token's latent or a mask token
DECODERS = ("cross", "self")


def projector(dim: int, kind: str = "bn_relu", hidden: int | None = None, out: int | None = None,
              bias: bool = True) -> nn.Sequential:
    """The projection head h_psi of the task-contrastive loss: [B, dim] -> [B, out].

    ``bn_relu`` (the default): Linear(dim, hidden), BatchNorm1d, ReLU, Linear(hidden, out), the
    released code's head; ``bn``: Linear, BatchNorm1d, Linear, Table 7 read literally (no
    activation listed). ``hidden`` defaults to 4 * dim (Table 7 prints 1028 for dim 256; the
    released code has 4 * 256), ``out`` to dim // 2 (128 for dim 256, Table 7's output).
    ``bias``: the Linear layers' biases (the released code has none).
    """
    if kind not in PROJECTIONS:
        raise ValueError(f"method 'metamae': projection {kind!r} unknown (known: {', '.join(PROJECTIONS)})")
    hidden = 4 * dim if hidden is None else int(hidden)
    out = max(dim // 2, 1) if out is None else int(out)
    if hidden < 1 or out < 1:
        raise ValueError(f"method 'metamae': projection_hidden and projection_dim must be >= 1, got {hidden}, {out}")
    act = [nn.ReLU()] if kind == "bn_relu" else []
    return nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.BatchNorm1d(hidden), *act, nn.Linear(hidden, out, bias=bias))


class MetaMAE(Method):
    display_name = "MetaMAE"
    defaults = {"mask_ratio": 0.5, "support_ratio": 0.1, "inner_lr": 0.1, "contrastive_weight": 0.1,
                "temperature": 0.5, "decoder_depth": 2, "first_order": False, "nearby": "embedding",
                "projection": "bn_relu", "projection_hidden": None, "projection_dim": None,
                "projection_bias": True, "decoder": "cross"}

    def __init__(self, spec: InputSpec, model_cfg: dict, method_cfg: dict) -> None:
        super().__init__(spec, model_cfg, method_cfg)
        if self.cfg["nearby"] not in NEARBY:
            raise ValueError(f"method 'metamae': nearby {self.cfg['nearby']!r} unknown (known: {', '.join(NEARBY)})")
        # index neighbours are a domain prior (as is a sine-cosine table, see Method)
        self.domain_agnostic = self.domain_agnostic and self.cfg["nearby"] == "embedding"
        if self.cfg["decoder"] not in DECODERS:
            raise ValueError(f"method 'metamae': decoder {self.cfg['decoder']!r} unknown (known: {', '.join(DECODERS)})")
        if self.cfg["decoder"] == "self" and model_cfg.get("arch") == "perceiver":
            raise ValueError("method 'metamae': decoder 'self' needs one latent per visible token, "
                             "a transformer encoder (arch: transformer), not Perceiver latents")
        dim = int(model_cfg["dim"])
        kind = SelfAttentionDecoder if self.cfg["decoder"] == "self" else TransformerDecoder
        self.decoder = kind(spec, dim, int(model_cfg.get("decoder_dim", dim)),
                            int(model_cfg.get("decoder_heads", model_cfg["heads"])),
                            int(self.cfg["decoder_depth"]), dropout=decoder_dropout(model_cfg))
        self.projector = projector(dim, self.cfg["projection"], self.cfg["projection_hidden"],
                                   self.cfg["projection_dim"], bool(self.cfg["projection_bias"]))

    def _decoding(self, visible: Tensor, idx: Tensor, q_pad: Tensor):
        """decode(pos, z, z_pad, q_pad) for the chosen decoder; the "self" decoder also gets the
        latent row of each target position (-1: masked), visible tokens in position order."""
        if self.cfg["decoder"] != "self":
            return self.decoder
        row = torch.where(visible, visible.long().cumsum(1) - 1, torch.full_like(idx[:, :1], -1).expand_as(visible))
        slot = gather_tokens(row, idx).masked_fill(q_pad, -1)                               # [B, M]
        return lambda pos, z, z_pad, qp: self.decoder(pos, z, z_pad, qp, slot=slot)

    def nearby(self, visible: Tensor, query: Tensor, generator: torch.Generator | None) -> Tensor:
        """N(S; r) within the query set: [B, N] bool (see the module docstring for the two choices)."""
        r = float(self.cfg["support_ratio"])
        if self.cfg["nearby"] == "index":
            return index_nearby(visible, query, self.uniform(tuple(query.shape), generator, query.device), r)
        n_near = torch.floor(query.sum(1).double() * r + 0.5).long()
        return nearby_mask(self.encoder.embedding.pos[:query.shape[1]].detach(), visible, query, n_near)

    @torch.no_grad()
    def draw_mask(self, batch: Batch, generator: torch.Generator | None = None, step: int | None = None) -> Tensor:
        """The query set Q of a training step: a uniform random mask at ``mask_ratio``."""
        b, n = batch.padding_mask.shape
        noise = self.position_noise(b, n, generator, batch.padding_mask.device)
        return random_mask(noise, batch.padding_mask, num_masked(batch.n_valid, float(self.cfg["mask_ratio"])))

    def _score(self, batch: Batch, mask: Tensor, inner_step: bool) -> Tensor:
        """The query loss of ``mask`` decoded from the latent of the visible tokens; ``inner_step``:
        after one inner step on the reconstruction of the visible tokens only (Nearby-S tokens are
        masked ones, whose values a held-out score must not use)."""
        pad, kind = batch.padding_mask, self.spec.kind
        visible = ~pad & ~mask
        enc = self.encoder.encode(batch, mask)
        idx, q_pad = masked_index(~pad)
        pos, target = self.encoder.embedding.pos[idx], gather_tokens(batch.x, idx)
        at = lambda m: gather_tokens(m, idx) & ~q_pad                                        # noqa: E731
        decode = self._decoding(visible, idx, q_pad)
        z = enc.h.detach()                                                                   # [B, L, D]
        if inner_step:
            with torch.enable_grad():
                z = z.requires_grad_(True)
                with sdpa_kernel(SDPBackend.MATH):
                    support = per_sample_loss(decode(pos, z, enc.padding_mask, q_pad), target, at(visible), kind)
                    (grad,) = torch.autograd.grad(support.sum(), z)
            z = (z - float(self.cfg["inner_lr"]) * grad).detach()
        return reconstruction_loss(decode(pos, z, enc.padding_mask, q_pad), target, at(mask), kind).detach()

    def masked_loss(self, batch: Batch, mask: Tensor) -> Tensor:
        """The query loss of ``mask`` from the amortized latent Z = f(S), no inner step: the test
        every method takes (see :meth:`Method.masked_loss`)."""
        return self._score(batch, mask, inner_step=False)

    def adapted_masked_loss(self, batch: Batch, mask: Tensor) -> Tensor:
        """The query loss after MetaMAE's own adaptation, one inner step on the latent, with the
        visible tokens as its only support (in training the support also holds Nearby-S masked
        tokens; here their values are the held-out targets)."""
        return self._score(batch, mask, inner_step=True)

    def forward(self, batch: Batch, generator: torch.Generator | None = None, step: int = 0) -> MethodOutput:
        pad, kind = batch.padding_mask, self.spec.kind
        b, n = pad.shape
        n_valid = batch.n_valid
        noise = self.position_noise(b, n, generator, pad.device)
        mask = random_mask(noise, pad, num_masked(n_valid, float(self.cfg["mask_ratio"])))  # Q
        visible = ~pad & ~mask                                                              # S
        near = self.nearby(visible, mask, generator)                                        # N(S; r)

        enc = self.encoder.encode(batch, mask)
        z, z_pad = enc.h, enc.padding_mask                                                  # [B, L, D]
        idx, q_pad = masked_index(~pad)                                                     # all valid positions
        pos = self.encoder.embedding.pos[idx]                                               # [B, Nv, D]
        target = gather_tokens(batch.x, idx)

        def at(m: Tensor) -> Tensor:                                                        # [B, N] -> [B, Nv]
            return gather_tokens(m, idx) & ~q_pad

        decode = self._decoding(visible, idx, q_pad)

        # inner step on the latent: reconstruct S ∪ N(S; r). The decoder runs on the math SDPA
        # kernel, the one whose backward is itself differentiable (second order).
        with sdpa_kernel(SDPBackend.MATH):
            support_loss = per_sample_loss(decode(pos, z, z_pad, q_pad), target, at(visible | near), kind)
            (grad,) = torch.autograd.grad(support_loss.sum(), z, create_graph=not self.cfg["first_order"])
            z_star = z - float(self.cfg["inner_lr"]) * grad
            query_loss = reconstruction_loss(decode(pos, z_star, z_pad, q_pad), target, at(mask), kind)
        con = nt_xent(self.projector(self.encoder.pool(z, z_pad)),
                      self.projector(self.encoder.pool(z_star, z_pad)), float(self.cfg["temperature"]))
        loss = query_loss + float(self.cfg["contrastive_weight"]) * con
        stats = {"mask_ratio": float(mask.sum() / n_valid.sum().clamp(min=1)),
                 "support_loss": float(support_loss.detach().mean()),
                 "query_loss": float(query_loss.detach()), "contrastive": float(con.detach())}
        return MethodOutput(loss, stats)
