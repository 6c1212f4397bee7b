"""Speed ratios of the method implementations, measured in one run on this machine.

    python scripts/bench_methods.py [--repeats 7] [--quick]

Prints one table:
  * SMA train step / random-mask train step (quick chemistry size);
  * select_mask vs the official-style algorithm (softmax over every query and head, then a Python
    loop over the batch), for Perceiver cross-attention and for self-attention;
  * our self-attention encoder train step vs torch.nn.TransformerEncoder of the same shape;
  * achieved FLOP/s of a train step as a fraction of the fp32 matmul peak measured in this run.
Timings are medians over interleaved repeats (robust to other load on the machine).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline_src.data.batch import Batch, InputSpec
from pipeline_src.methods import build_method, select_mask

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CHEM = {"arch": "transformer", "dim": 128, "depth": 4, "heads": 4, "mlp_ratio": 4, "max_len": 128,
        "decoder_dim": 128, "decoder_heads": 4}


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def compare(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call, the candidates interleaved so that background load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def chem_batch(b: int, seed: int = 0) -> Batch:
    """SMILES-sized byte sequences: 40-60 tokens, padded to the batch maximum."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(40, 61, (b,), generator=g)
    n = int(lengths.max())
    pad = torch.arange(n)[None, :] >= lengths[:, None]
    x = torch.randint(33, 127, (b, n), generator=g).masked_fill(pad, 0)
    return Batch(x, pad).to(DEVICE)


def train_step_fn(model: nn.Module, step: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        loss = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def bench_method_steps(repeats: int) -> tuple[dict[str, float], float]:
    spec = InputSpec("discrete", CHEM["max_len"])
    batch = chem_batch(64)
    fns, models = {}, {}
    for name, cfg in [("random", {"mask_ratio": 0.3}), ("sma", {"mask_ratio": 0.3, "num_per_query": 4})]:
        torch.manual_seed(0)
        m = build_method(name, spec, CHEM, cfg).to(DEVICE)
        g = torch.Generator(device=DEVICE).manual_seed(0)
        models[name] = m
        fns[name] = train_step_fn(m, lambda m=m, g=g: m(batch, g).loss)
    t = compare(fns, repeats)
    # FLOPs of one random-mask train step (forward + backward)
    with FlopCounterMode(display=False) as fc:
        models["random"](batch, torch.Generator(device=DEVICE).manual_seed(0)).loss.backward()
    return t, float(fc.get_total_flops())


def official_style(logits: torch.Tensor, kpm: torch.Tensor, ratio: float, npq: int,
                   self_attention: bool) -> torch.Tensor:
    """The reference algorithm as usually written: softmax every query of every head, sum heads,
    then per sample: random queries, sum rows, top-k."""
    attn = torch.softmax(logits.masked_fill(kpm[:, None, None, :], float("-inf")), dim=-1).sum(1)  # [B, Q, N]
    out = torch.zeros(kpm.shape, dtype=torch.bool, device=logits.device)
    for b in range(attn.shape[0]):
        n = int((~kpm[b]).sum())
        q_ids = (~kpm[b]).nonzero().flatten() if self_attention else torch.arange(attn.shape[1])
        m = max(int(n * ratio / npq + 0.5), 1)
        chosen = q_ids[torch.randperm(len(q_ids), device=logits.device)[:m]]
        score = attn[b, chosen].sum(0).masked_fill(kpm[b], float("-inf"))
        out[b, torch.topk(score, int(n * ratio + 0.5)).indices] = True
    return out


def bench_select(b: int, h: int, q: int, n: int, self_attention: bool, repeats: int) -> dict[str, float]:
    g = torch.Generator(device=DEVICE).manual_seed(0)
    logits = torch.randn(b, h, q, n, generator=g, device=DEVICE)
    lengths = torch.randint(n // 2, n + 1, (b,), generator=g, device=DEVICE)
    kpm = torch.arange(n, device=DEVICE)[None, :] >= lengths[:, None]
    qpm = kpm if self_attention else None
    fns = {"ours": lambda: select_mask(logits, kpm, 0.15, 4, g, query_padding_mask=qpm),
           "official": lambda: official_style(logits, kpm, 0.15, 4, self_attention)}
    with torch.no_grad():
        return compare(fns, repeats, warmup=1)


def bench_encoder_vs_torch(repeats: int) -> dict[str, float]:
    spec = InputSpec("discrete", CHEM["max_len"])
    batch = chem_batch(64)
    d, depth, heads = CHEM["dim"], CHEM["depth"], CHEM["heads"]
    torch.manual_seed(0)
    ours = build_method("none", spec, CHEM, {}).encoder.to(DEVICE)
    layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    ref = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d), enable_nested_tensor=False).to(DEVICE)
    x_emb = ours.embed(batch).detach()                                # same input for both
    pad = batch.padding_mask
    fns = {"ours": train_step_fn(ours, lambda: ours.encode_embedded(x_emb, pad).h.square().mean()),
           "torch": train_step_fn(ref, lambda: ref(x_emb, src_key_padding_mask=pad).square().mean())}
    return compare(fns, repeats)


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=DEVICE)
    b = torch.randn(size, size, device=DEVICE)
    t = compare({"mm": lambda: a @ b}, repeats)["mm"]
    return 2 * size ** 3 / t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="smaller select_mask case (batch 64)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = args.repeats
    print(f"device={DEVICE} threads={torch.get_num_threads()} torch={torch.__version__}")

    steps, flops = bench_method_steps(r)
    peak = matmul_peak()
    sel_b = 64 if args.quick else 256
    cross = bench_select(sel_b, 8, 256, 1024, False, max(r // 3, 3))
    selfa = bench_select(sel_b, 4, 128, 128, True, r)
    enc = bench_encoder_vs_torch(r)

    rows = [
        ("SMA step / random step (chem quick, B=64)", steps["sma"] / steps["random"], "<= 1.05",
         f"{steps['sma']*1e3:.1f} / {steps['random']*1e3:.1f} ms"),
        (f"select_mask speedup, cross B={sel_b} L=256 N=1024", cross["official"] / cross["ours"], ">= 10",
         f"{cross['official']*1e3:.1f} / {cross['ours']*1e3:.1f} ms"),
        (f"select_mask speedup, self B={sel_b} N=128", selfa["official"] / selfa["ours"], ">= 10",
         f"{selfa['official']*1e3:.1f} / {selfa['ours']*1e3:.1f} ms"),
        ("our encoder step / nn.TransformerEncoder", enc["ours"] / enc["torch"], "<= 1.1",
         f"{enc['ours']*1e3:.1f} / {enc['torch']*1e3:.1f} ms"),
        ("random step FLOP/s / fp32 matmul peak", flops / steps["random"] / peak, "(info)",
         f"{flops/steps['random']/1e9:.1f} / {peak/1e9:.1f} GFLOP/s"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'ratio':>8}  {'target':>8}  detail")
    for name, ratio, target, detail in rows:
        print(f"{name:<{w}}  {ratio:8.3f}  {target:>8}  {detail}")


if __name__ == "__main__":
    main()
