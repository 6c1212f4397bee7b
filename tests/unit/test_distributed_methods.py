"""Data-parallel training of the real methods: SMA (attention-guided masks) and MetaMAE (second-order
inner step with ``create_graph``, BatchNorm in its projection head), 2 gloo ranks on the CPU against
one process on the same global batch.

Both runs see the same global batch of equal-length samples (so every sample has the same number of
masked tokens and the token-mean loss of the batch is the mean of the two half-batch means) and the
same random draws: each call of a method's ``position_noise`` / ``uniform`` returns its rows of one
draw made for the whole global batch, so the masks of a rank are exactly its rows of the
single-process masks. The methods run wrapped in DistributedDataParallel, as the training loop
wraps them.

What holds, and is asserted (tolerance: max |difference| <= 1e-5 x the largest entry, float32
sums taken in another order):

- SMA, and MetaMAE with ``contrastive_weight: 0``: the synced gradients of the first step and the
  losses of the first 3 AdamW steps equal the single process's.
- MetaMAE with its contrastive term (``contrastive_weight: 0.1``, ``projection: bn`` and ``bn_relu``):
  the first step's query loss (reconstruction after the inner step) equals the single process's; the
  task-contrastive term does not, and neither do the gradients. They do equal, within the same
  tolerance, a single process that computes that term on each half of the batch apart (its
  BatchNorm on the half's statistics, NT-Xent within the half) and averages: so the whole
  difference is that the term is computed per rank. Its
  BatchNorm1d normalizes with the rank's half-batch statistics (DDP does not sync them; no
  SyncBatchNorm), and NT-Xent takes its negatives from the rank's own samples only (7 pairs' worth of
  negatives per sample instead of 15 here). So a 2-rank MetaMAE run is a run at the per-rank batch size
  for that term. Measured here (first step, batch 16, 2 ranks): NT-Xent 1.786 in one process against
  1.073 on the ranks' halves with ``projection: bn`` (2.179 against 1.444 with ``bn_relu``); the test
  prints it and checks it is more than rounding.

Run as a script under torchrun it is the worker: ``... test_distributed_methods.py OUT.pt``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from test_train_support import toy_corpus  # noqa: E402

SEQ, BATCH, STEPS = 12, 16, 3
MODEL = {"arch": "transformer", "dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2, "max_len": SEQ,
         "decoder_dim": 32, "decoder_heads": 2, "dropout": 0.0}
CASES = {
    "sma": ("sma", {"mask_ratio": 0.3}),
    "metamae_no_contrastive": ("metamae", {"mask_ratio": 0.5, "support_ratio": 0.2, "contrastive_weight": 0.0,
                                           "decoder_depth": 1}),
    "metamae_bn": ("metamae", {"mask_ratio": 0.5, "support_ratio": 0.2, "contrastive_weight": 0.1,
                               "decoder_depth": 1, "projection": "bn"}),
    "metamae_bn_relu": ("metamae", {"mask_ratio": 0.5, "support_ratio": 0.2, "contrastive_weight": 0.1,
                                    "decoder_depth": 1, "projection": "bn_relu"}),
}
TOL = 1e-5


class Tape:
    """The random draws of the global batch: the k-th call returns rows [lo, hi) of the k-th draw,
    made for all BATCH samples from one seeded generator."""

    def __init__(self, lo: int, hi: int, seed: int = 1) -> None:
        self.lo, self.hi = lo, hi
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand((BATCH, *shape[1:]), generator=self.gen)[self.lo:self.hi]


def run_case(name: str, rank: int, world: int, per_half: bool = False) -> dict:
    """Losses and stats of STEPS steps and the (synced) gradients of the first, on this rank's rows
    of the global batch. ``per_half`` (one process): MetaMAE's contrastive term computed on each half
    of the batch apart and averaged, its projection head's BatchNorm on each half's statistics,
    as two ranks compute it."""
    from torch.nn.parallel import DistributedDataParallel

    from pipeline_src.methods import build_method, metamae

    method_name, cfg = CASES[name]
    corpus = toy_corpus(BATCH * STEPS, min_len=SEQ, max_len=SEQ)
    torch.manual_seed(0)
    method = build_method(method_name, corpus.spec(SEQ), MODEL, cfg)
    lo, hi = rank * BATCH // world, (rank + 1) * BATCH // world
    tape = Tape(lo, hi)
    method.position_noise = lambda b, n, generator, device: tape.draw((b, n))
    method.uniform = lambda shape, generator, device: tape.draw(tuple(shape))
    model = DistributedDataParallel(method) if world > 1 else method
    nt_xent = metamae.nt_xent
    if per_half:
        h = BATCH // 2
        whole = method.projector.forward
        method.projector.forward = lambda x: torch.cat([whole(x[:h]), whole(x[h:])])
        metamae.nt_xent = lambda a, b, t: (nt_xent(a[:h], b[:h], t) + nt_xent(a[h:], b[h:], t)) / 2
    try:
        return _steps(model, method, corpus, lo, hi, world)
    finally:
        metamae.nt_xent = nt_xent


def _steps(model, method, corpus, lo: int, hi: int, world: int) -> dict:
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    out = {"loss": [], "stats": [], "grads": None}
    for step in range(STEPS):
        batch = corpus.batch(list(range(step * BATCH + lo, step * BATCH + hi)), SEQ)
        res = model(batch, generator=None, step=step)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        vals = torch.tensor([float(res.loss.detach()), *[float(v) for v in res.stats.values()]], dtype=torch.float64)
        if world > 1:
            torch.distributed.all_reduce(vals)
            vals /= world
        out["loss"].append(float(vals[0]))
        out["stats"].append(dict(zip(res.stats, vals[1:].tolist())))
        if step == 0:
            out["grads"] = {k: p.grad.detach().clone() for k, p in method.named_parameters() if p.grad is not None}
        opt.step()
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-12))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ddp_methods") / "two.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASKBENCH_DIST_BACKEND="gloo", MASKBENCH_DEVICE="",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "test_distributed_methods.py"), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    two = torch.load(out, weights_only=False)
    out = {name: (run_case(name, 0, 1), two[name]) for name in CASES}
    out.update({f"{name}_per_half": (run_case(name, 0, 1, per_half=True), two[name])
                for name in ("metamae_bn", "metamae_bn_relu")})
    return out


@pytest.mark.parametrize("name", ["sma", "metamae_no_contrastive", "metamae_bn_per_half", "metamae_bn_relu_per_half"])
def test_two_ranks_equal_one_process(runs, name):
    """SMA and MetaMAE without its contrastive term: two ranks = one process. With the term: two
    ranks = one process that computes the term (BatchNorm statistics, NT-Xent negatives) per half."""
    one, two = runs[name]
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 10
    worst = max(_rel(one["grads"][k], two["grads"][k]) for k in one["grads"])
    assert worst <= TOL, (name, worst)
    for a, b in zip(one["loss"], two["loss"]):
        assert abs(a - b) <= TOL * abs(a), (name, one["loss"], two["loss"])


@pytest.mark.parametrize("name", ["metamae_bn", "metamae_bn_relu"])
def test_metamae_contrastive_term_is_per_rank(runs, name):
    """The reconstruction after the inner step matches; the contrastive term (per-rank BatchNorm
    statistics and negatives) and so the gradients do not, by more than rounding."""
    one, two = runs[name]
    q1, q2 = one["stats"][0]["query_loss"], two["stats"][0]["query_loss"]
    assert abs(q1 - q2) <= TOL * abs(q1)
    c1, c2 = one["stats"][0]["contrastive"], two["stats"][0]["contrastive"]
    worst = max(_rel(one["grads"][k], two["grads"][k]) for k in one["grads"])
    print(f"{name}: contrastive one process {c1:.5f}, two ranks (mean) {c2:.5f}; "
          f"largest relative gradient difference {worst:.2e}")
    assert abs(c1 - c2) > 100 * TOL * abs(c1)      # a real difference: the term sees half the batch
    assert 0 < c2 < c1                             # fewer negatives per sample: a lower NT-Xent
    assert worst > 100 * TOL


if __name__ == "__main__":
    from pipeline_src.train import distributed

    ctx, _ = distributed.setup("cpu")
    try:
        torch.set_num_threads(1)
        results = {name: run_case(name, ctx.rank, ctx.world_size) for name in CASES}
        if ctx.is_main:
            torch.save(results, sys.argv[1])
            print(json.dumps({k: v["loss"] for k, v in results.items()}), flush=True)
    finally:
        distributed.cleanup()
