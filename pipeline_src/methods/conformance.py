"""``python -m pipeline_src method check NAME``: does a method keep the contract the pipeline and the
papers ask of it? Runs in seconds on the CPU, on a small model of each domain's shape.

Checks, per domain shape (chemistry: bytes through a transformer; proteins: bytes through a
Perceiver; physics: one continuous token per feature):

- ``build``: the class builds from its ``defaults`` on the shape;
- ``steps``: a few optimizer steps give a finite loss, gradients that reach the encoder, and a
  reported ``mask_ratio`` in (0, 1];
- ``generator``: every draw comes from the generator passed to ``forward`` (two runs with the same
  generator seed and different global RNG states give the same losses);
- ``masked_loss``: the held-out diagnostic's reconstruction loss of given masks is a finite scalar
  that depends only on the mask (the same mask twice, the same value);
- ``permutation`` (only when the class says ``domain_agnostic = True``): SMA eq. 1 — one fixed
  permutation applied to the tokens, the positional-embedding init and every position-indexed draw
  (:meth:`Method.position_noise`) permutes the masks and leaves the training losses unchanged
  (float64, up to rounding), and leaves ``masked_loss`` of the permuted mask unchanged.

    results = check_method("sma")          # list[CheckResult]
    print(format_table("sma", results))
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..batch import Batch, InputSpec
from .base import MaskedAutoencoder, Method
from .registry import display_name, method_class, method_entry

NO_PRETRAINING = "none"   # the method with no pretraining step (train/pretrain.py)
CHECKS = ("build", "steps", "generator", "masked_loss", "permutation")
N_TOKENS = 24


@dataclass(frozen=True)
class Shape:
    """A domain's input kind and encoder architecture, at sizes that run in seconds."""
    domain: str
    kind: str
    arch: str
    n: int

    def spec(self) -> InputSpec:
        return InputSpec(self.kind, self.n)  # type: ignore[arg-type]

    def model(self) -> dict[str, Any]:
        return {"arch": self.arch, "dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2, "max_len": self.n,
                "num_latents": 8, "decoder_dim": 32, "decoder_heads": 2, "dropout": 0.0}


SHAPES = (Shape("chemistry", "discrete", "transformer", N_TOKENS),
          Shape("proteins", "discrete", "perceiver", N_TOKENS),
          Shape("physics", "continuous", "transformer", 12))


@dataclass(frozen=True)
class CheckResult:
    domain: str
    check: str
    status: str          # "ok", "FAIL" or "n/a"
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


class CheckFailed(AssertionError):
    pass


def _batches(shape: Shape, count: int, size: int = 8, seed: int = 0) -> list[Batch]:
    """Random batches with padding (discrete: lengths vary; continuous: no padding, as HIGGS)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        if shape.kind == "discrete":
            lengths = torch.randint(shape.n // 2, shape.n + 1, (size,), generator=g)
            pad = torch.arange(shape.n)[None, :] >= lengths[:, None]
            x = torch.randint(1, 40, (size, shape.n), generator=g).masked_fill(pad, 0)
        else:
            z = torch.randn(size, 3, generator=g)
            x = (z @ torch.linspace(-1, 1, 3 * shape.n).reshape(3, shape.n)
                 + 0.1 * torch.randn(size, shape.n, generator=g)).unsqueeze(-1)
            x = x.to(torch.get_default_dtype())
            pad = torch.zeros(size, shape.n, dtype=torch.bool)
        out.append(Batch(x, pad))
    return out


def _fixed_mask(batch: Batch, ratio: float = 0.3, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch.padding_mask.shape, generator=g).masked_fill(batch.padding_mask, 2.0)
    k = (batch.n_valid.double() * ratio).round().clamp(min=1).long()
    rank = noise.argsort(1).argsort(1)
    return rank < k[:, None]


def _permute(batch: Batch, perm: torch.Tensor) -> Batch:
    return Batch(batch.x[:, perm], batch.padding_mask[:, perm])


def _permuted_twin(m: Method, perm: torch.Tensor) -> Method:
    """The same weights with the positional table and the position-indexed draws permuted."""
    twin = copy.deepcopy(m)
    with torch.no_grad():
        twin.encoder.embedding.pos.copy_(m.encoder.embedding.pos[perm])
    draw = twin.position_noise
    twin.position_noise = lambda b, n, g, d: draw(b, n, g, d)[:, perm]  # type: ignore[method-assign]
    return twin


@contextmanager
def _float64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _build(cls: type[Method], shape: Shape, seed: int = 0) -> Method:
    torch.manual_seed(seed)
    return cls(shape.spec(), shape.model(), dict(cls.defaults))


def _train(m: Method, batches: list[Batch], seed: int, global_seed: int | None = None) -> list[float]:
    """Adam steps; the losses. ``global_seed`` resets the global RNG before each step."""
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step, batch in enumerate(batches):
        if global_seed is not None:
            torch.manual_seed(global_seed + step)
        out = m(batch, g, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


# --- the checks -------------------------------------------------------------------------------

def check_steps(cls: type[Method], shape: Shape, steps: int) -> str:
    m = _build(cls, shape)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    ratios = []
    for step, batch in enumerate(_batches(shape, steps)):
        out = m(batch, g, step)
        loss = out.loss
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            raise CheckFailed(f"step {step}: the loss is not a scalar tensor ({type(loss).__name__})")
        if not torch.isfinite(loss):
            raise CheckFailed(f"step {step}: loss {float(loss)} is not finite")
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in m.encoder.parameters() if p.grad is not None]
        if not grads or not any(bool((gr != 0).any()) for gr in grads):
            raise CheckFailed(f"step {step}: no gradient reaches the encoder")
        if not all(bool(torch.isfinite(gr).all()) for gr in grads):
            raise CheckFailed(f"step {step}: non-finite encoder gradients")
        opt.step()
        r = out.stats.get("mask_ratio")
        if r is None or not math.isfinite(float(r)) or not 0.0 < float(r) <= 1.0:
            raise CheckFailed(f"step {step}: stats['mask_ratio'] = {r!r}, expected a number in (0, 1]")
        ratios.append(float(r))
    return f"mask ratio {sum(ratios) / len(ratios):.2f}"


def check_generator(cls: type[Method], shape: Shape, steps: int) -> str:
    batches = _batches(shape, steps)
    a = _train(_build(cls, shape), batches, seed=1, global_seed=100)
    b = _train(_build(cls, shape), batches, seed=1, global_seed=900)
    if a != b:
        raise CheckFailed(f"same generator seed, other global RNG state: losses {a} vs {b} (a draw does not "
                          "come from the generator passed to forward)")
    c = _train(_build(cls, shape), batches, seed=2, global_seed=100)
    return "same seed, same losses" + ("" if c != a else " (another seed: also the same)")


def check_masked_loss(cls: type[Method], shape: Shape) -> str:
    m = _build(cls, shape)
    m.eval()
    batch = _batches(shape, 1, seed=3)[0]
    mask = _fixed_mask(batch)
    try:
        with torch.no_grad():
            torch.manual_seed(11)
            a = m.masked_loss(batch, mask)
            torch.manual_seed(12)
            b = m.masked_loss(batch, mask)
    except NotImplementedError as e:
        raise CheckFailed(f"masked_loss raises NotImplementedError ({e}): the held-out diagnostic has no "
                          "number for this method") from e
    if not (isinstance(a, torch.Tensor) and a.dim() == 0 and bool(torch.isfinite(a))):
        raise CheckFailed(f"masked_loss gave {a!r}, expected a finite scalar tensor")
    if not torch.equal(a, b):
        raise CheckFailed(f"masked_loss of the same mask differs: {float(a)} vs {float(b)}")
    return f"{float(a):.3f}"


def check_permutation(cls: type[Method], shape: Shape, steps: int) -> str:
    """SMA eq. 1, in float64 so that only rounding separates the two runs."""
    with _float64():
        perm = torch.randperm(shape.n, generator=torch.Generator().manual_seed(42))
        batches = _batches(shape, steps)
        base = _build(cls, shape)
        twin = _permuted_twin(base, perm)
        if isinstance(base, MaskedAutoencoder):
            b0 = batches[0]
            g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
            r1 = base.sample_ratio(len(b0.x), g1, torch.device("cpu"))
            r2 = twin.sample_ratio(len(b0.x), g2, torch.device("cpu"))
            with torch.no_grad():
                m1 = base.make_mask(b0, base.encoder.embed(b0), r1, g1, 0)[0]
                pb = _permute(b0, perm)
                m2 = twin.make_mask(pb, twin.encoder.embed(pb), r2, g2, 0)[0]
            if not torch.equal(m1[:, perm], m2):
                raise CheckFailed(f"the permuted input's mask is not the permuted mask "
                                  f"({int((m1[:, perm] != m2).sum())} positions differ)")
        try:
            base.eval()
            twin.eval()
            mask = _fixed_mask(batches[0])
            with torch.no_grad():
                l1 = base.masked_loss(batches[0], mask)
                l2 = twin.masked_loss(_permute(batches[0], perm), mask[:, perm])
            if not torch.allclose(l1, l2, rtol=1e-9, atol=1e-10):
                raise CheckFailed(f"masked_loss of the permuted input and mask: {float(l2)} vs {float(l1)}")
        except NotImplementedError:
            pass   # reported by the masked_loss check
        base.train()
        twin.train()
        a = _train(base, batches, seed=1)
        b = _train(twin, [_permute(x, perm) for x in batches], seed=1)
    if not torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-9, atol=1e-10):
        raise CheckFailed(f"permuted tokens change the training losses: {a} vs {b}")
    return f"{steps} steps, same losses"


def _run(domain: str, check: str, fn: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(domain, check, "ok", fn())
    except CheckFailed as e:
        return CheckResult(domain, check, "FAIL", str(e))
    except Exception as e:   # the method's own code raised: that is the check's failure
        return CheckResult(domain, check, "FAIL", f"{type(e).__name__}: {e}")


def check_method(name: str, steps: int = 3, force_permutation: bool = False,
                 shapes: tuple[Shape, ...] = SHAPES) -> list[CheckResult]:
    """Every check of ``name`` on every shape. ``force_permutation`` runs the permutation check for
    a method that does not claim to be domain-agnostic."""
    return check_class(method_class(name), steps, force_permutation, shapes, no_step=name == NO_PRETRAINING)


def check_class(cls: type[Method], steps: int = 3, force_permutation: bool = False,
                shapes: tuple[Shape, ...] = SHAPES, no_step: bool = False) -> list[CheckResult]:
    out: list[CheckResult] = []
    with torch.random.fork_rng(devices=[]):
        for shape in shapes:
            d = shape.domain
            built = _run(d, "build", lambda: (_build(cls, shape), "defaults")[1])
            out.append(built)
            if built.failed:
                out += [CheckResult(d, c, "n/a", "does not build") for c in CHECKS[1:]]
                continue
            if no_step:
                out += [CheckResult(d, c, "n/a", "no pretraining step") for c in CHECKS[1:]]
                continue
            out.append(_run(d, "steps", lambda: check_steps(cls, shape, steps)))
            out.append(_run(d, "generator", lambda: check_generator(cls, shape, steps)))
            out.append(_run(d, "masked_loss", lambda: check_masked_loss(cls, shape)))
            if cls.domain_agnostic or force_permutation:
                out.append(_run(d, "permutation", lambda: check_permutation(cls, shape, steps)))
            else:
                out.append(CheckResult(d, "permutation", "n/a", "domain_agnostic = False"))
    return out


def format_table(title: str, results: list[CheckResult]) -> str:
    domains = list(dict.fromkeys(r.domain for r in results))
    cell = {(r.domain, r.check): r for r in results}
    width = max(len(d) for d in domains) + 2
    lines = [title, "", f"{'check':<13}" + "".join(f"{d:<{width}}" for d in domains)]
    for c in CHECKS:
        lines.append(f"{c:<13}" + "".join(f"{cell[d, c].status if (d, c) in cell else '-':<{width}}" for d in domains))
    failed = [r for r in results if r.failed]
    if failed:
        lines += ["", "failed:"] + [f"  {r.check} ({r.domain}): {r.detail}" for r in failed]
    else:
        lines += ["", "every check passed" + (" (n/a: not applicable to this method)"
                                            if any(r.status == "n/a" for r in results) else "")]
    return "\n".join(lines)


def main(name: str, steps: int = 3, force_permutation: bool = False) -> int:
    """Print the table; 0 when every applicable check passes, 1 otherwise."""
    entry = method_entry(name)
    cls = method_class(name)
    flags = f"domain_agnostic = {cls.domain_agnostic}, guided_masks = {cls.guided_masks}"
    title = f"method check {name} ({display_name(cls)}): {entry.where()}; {flags}"
    torch.set_num_threads(1)
    results = check_method(name, steps, force_permutation)
    print(format_table(title, results), flush=True)
    return 1 if any(r.failed for r in results) else 0
