"""The contract every pretraining method follows, and the shared masked-autoencoder machinery.

Randomness: every draw comes from the ``generator`` passed to ``forward`` (None = the global
RNG). Draws indexed by input position go through :meth:`Method.position_noise`, always one
``[B, N]`` uniform tensor per use, so that permuting token order permutes them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..batch import Batch, InputSpec
from ..models.decoders import UpsampleDecoder, gather_tokens, reconstruction_loss
from ..models.encoders import Encoding, build_encoder, decoder_dropout
from .masking import num_masked, random_mask


@dataclass
class MethodOutput:
    loss: Tensor                                   # scalar, differentiable
    stats: dict[str, float] = field(default_factory=dict)  # at least "mask_ratio"


def masked_index(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Positions where mask is True, moved to the front in position order.

    mask: [B, N] bool -> (idx [B, M] long, pad [B, M] bool) with M the largest count in the batch.
    """
    count = mask.sum(1)                                              # [B]
    m = max(int(count.max()), 1)
    idx = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :m]
    pad = torch.arange(m, device=mask.device) >= count[:, None]
    return idx, pad


class Method(nn.Module):
    """Base class. Subclasses set ``defaults`` (their config keys and values, the config of a method
    with no entry under ``methods:``), ``display_name`` (the report's label), ``domain_agnostic``
    (whether SMA eq. 1 holds: ``method check`` tests it) and ``guided_masks`` (its masks come from
    the first layer's attention as SMA's do: the report draws them). ``name`` is set from the
    method's entry point (``methods/registry.py``)."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    domain_agnostic: ClassVar[bool] = True
    guided_masks: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: InputSpec, model_cfg: dict[str, Any], method_cfg: dict[str, Any]) -> None:
        super().__init__()
        unknown = set(method_cfg) - set(self.defaults)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown config keys {sorted(unknown)}; "
                             f"expected a subset of {sorted(self.defaults)}")
        self.spec, self.model_cfg = spec, dict(model_cfg)
        self.cfg = {**self.defaults, **method_cfg}
        self.encoder = build_encoder(spec, model_cfg)
        if model_cfg.get("pos_embedding") == "sincos":
            # a fixed sine-cosine table tells the model that index neighbours are alike: an order
            # prior (SMA §3.2 asks for none), although a run still permutes with its table (eq. 1)
            self.domain_agnostic = False

    def forward(self, batch: Batch, generator: torch.Generator | None = None, step: int = 0) -> MethodOutput:
        raise NotImplementedError

    def masked_loss(self, batch: Batch, mask: Tensor) -> Tensor:
        """Mean reconstruction loss of the ``mask``-ed tokens (mask [B, N] bool, given): the encoder
        reads the visible tokens, the decoder predicts the masked ones, one forward pass, no step
        and no use of the masked tokens' values before they are scored. The held-out diagnostic:
        the same test for every method (the same masks, the same call). Methods without a decoder
        raise NotImplementedError."""
        raise NotImplementedError(f"method {self.name!r} does not reconstruct")

    def adapted_masked_loss(self, batch: Batch, mask: Tensor) -> Tensor:
        """:meth:`masked_loss` after the method's own test-time adaptation, which may use the
        visible tokens only (never the masked tokens' values); the diagnostic's second, labelled
        column. Methods that do not adapt raise NotImplementedError."""
        raise NotImplementedError(f"method {self.name!r} has no test-time adaptation")

    @torch.no_grad()
    def draw_mask(self, batch: Batch, generator: torch.Generator | None = None, step: int | None = None) -> Tensor | None:
        """The mask [B, N] bool the method would train ``batch`` with at ``step`` (None: after any
        warm-up), drawn from ``generator``; None for a method without masks (``none``). The mask
        diversity of every run (:mod:`pipeline_src.train.diversity`) calls it twice per sample."""
        return None

    # --- randomness -------------------------------------------------------------------------
    def position_noise(self, batch_size: int, n: int, generator: torch.Generator | None,
                       device: torch.device) -> Tensor:
        """Uniform [B, N] noise indexed by input position (mask noise, query choice)."""
        return torch.rand(batch_size, n, generator=generator, device=device)

    @staticmethod
    def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Uniform draws not tied to a position (ratios, latent-query choice, warm-up coins)."""
        return torch.rand(shape, generator=generator, device=device)


class MaskedAutoencoder(Method):
    """Mask -> encode the visible tokens -> upsample (SMA eq. 6) -> loss on masked tokens only.

    Subclasses implement :meth:`make_mask`; the ratio per sample comes from :meth:`sample_ratio`.
    """

    def __init__(self, spec: InputSpec, model_cfg: dict[str, Any], method_cfg: dict[str, Any]) -> None:
        super().__init__(spec, model_cfg, method_cfg)
        dim = int(model_cfg["dim"])
        self.decoder = UpsampleDecoder(spec, dim, int(model_cfg.get("decoder_dim", dim)),
                                       int(model_cfg.get("decoder_heads", model_cfg["heads"])),
                                       float(model_cfg.get("mlp_ratio", 4)), decoder_dropout(model_cfg))

    def sample_ratio(self, batch_size: int, generator: torch.Generator | None,
                     device: torch.device) -> Tensor:
        return torch.full((batch_size,), float(self.cfg["mask_ratio"]), device=device, dtype=torch.float64)

    def make_mask(self, batch: Batch, x_emb: Tensor, ratio: Tensor, generator: torch.Generator | None,
                  step: int) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def draw_mask(self, batch: Batch, generator: torch.Generator | None = None, step: int | None = None) -> Tensor:
        """:meth:`make_mask` at a ratio from :meth:`sample_ratio`, as in a training step (a plugin
        method implements ``make_mask`` only; ``step`` None = a step past any warm-up)."""
        x_emb = self.encoder.embed(batch)
        ratio = self.sample_ratio(batch.padding_mask.shape[0], generator, x_emb.device)
        mask, _ = self.make_mask(batch, x_emb, ratio, generator, 2**62 if step is None else int(step))
        return mask

    def forward(self, batch: Batch, generator: torch.Generator | None = None, step: int = 0) -> MethodOutput:
        b, n = batch.padding_mask.shape
        x_emb = self.encoder.embed(batch)                             # [B, N, D]
        ratio = self.sample_ratio(b, generator, x_emb.device)         # [B]
        mask, stats = self.make_mask(batch, x_emb, ratio, generator, step)
        enc = self.encoder.encode_embedded(x_emb, batch.padding_mask, mask)
        loss = self.reconstruct(batch, enc, mask)
        n_valid = batch.n_valid.sum().clamp(min=1)
        stats = {"mask_ratio": float(mask.sum() / n_valid), **stats}
        return MethodOutput(loss, stats)

    def masked_loss(self, batch: Batch, mask: Tensor) -> Tensor:
        enc = self.encoder.encode_embedded(self.encoder.embed(batch), batch.padding_mask, mask)
        return self.reconstruct(batch, enc, mask)

    def reconstruct(self, batch: Batch, enc: Encoding, mask: Tensor) -> Tensor:
        idx, pad = masked_index(mask)                                 # [B, M]
        pos = self.encoder.embedding.pos[idx]                         # [B, M, D]
        pred = self.decoder(pos, enc.h, enc.padding_mask, pad)        # [B, M, out]
        return reconstruction_loss(pred, gather_tokens(batch.x, idx), ~pad, self.spec.kind)

    def random_mask(self, batch: Batch, ratio: Tensor, generator: torch.Generator | None) -> Tensor:
        b, n = batch.padding_mask.shape
        noise = self.position_noise(b, n, generator, batch.padding_mask.device)
        return random_mask(noise, batch.padding_mask, num_masked(batch.n_valid, ratio))
