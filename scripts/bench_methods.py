"""Speed ratios of the method implementations, measured in one run on this machine.

    python scripts/bench_methods.py [--repeats 15] [--threads 1] [--quick] [--check]

Prints:
  * per domain's quick shape (chemistry: transformer d 128, 4 layers, batch 64, n 40-60;
    physics: transformer d 64, n 28, batch 128; proteins: Perceiver d 128, 64 latents, n 224-256,
    batch 32): the train step of every method relative to ``random`` at the same mask ratio
    (r2mae and sma_r2 with ratio_min = ratio_max), SMA's mask selection alone relative to the
    random step, and each step's FLOP/s as a fraction of the fp32 matmul peak measured in this run;
  * the bf16-autocast train step relative to the fp32 step at three model sizes;
  * select_mask vs the official-style algorithm (softmax over every query and head, then a Python
    loop over the batch), for Perceiver cross-attention and for self-attention;
  * our self-attention encoder train step vs torch.nn.TransformerEncoder of the same shape.
Timings are interleaved (every candidate once per round); a ratio is the median over rounds of the
per-round ratio, so slow phases of other load on the machine hit both sides alike. On the CPU with
one thread the clock is this process's CPU time (``--clock cpu``, the default there): time spent
waiting for a core that other programs hold is not counted. Otherwise (and with ``--clock wall``)
it is wall time, synchronized with the GPU.
``--check`` exits 1 when SMA step / random step exceeds 1.05 on a shape.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline_src.batch import Batch, InputSpec
from pipeline_src.methods import MaskedAutoencoder, build_method, select_mask

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CLOCK: Callable[[], float] = time.perf_counter                   # main() may switch to time.process_time
CHEM = {"arch": "transformer", "dim": 128, "depth": 4, "heads": 4, "mlp_ratio": 4, "max_len": 128,
        "decoder_dim": 128, "decoder_heads": 4}
SMA_TARGET = 1.05
METHODS = ("random", "sma", "r2mae", "sma_r2", "span", "metamae")


@dataclass(frozen=True)
class Shape:
    """One domain's training step: model, batch size, sample lengths (min, max) and mask ratio."""
    domain: str
    model: dict[str, Any]
    batch: int
    lengths: tuple[int, int]
    ratio: float

    @property
    def kind(self) -> str:
        return "continuous" if self.domain == "physics" else "discrete"

    def spec(self) -> InputSpec:
        return InputSpec(self.kind, int(self.model["max_len"]))


QUICK = {
    "chemistry": Shape("chemistry", CHEM, 64, (40, 60), 0.3),
    "physics": Shape("physics", {"arch": "transformer", "dim": 64, "depth": 4, "heads": 4, "mlp_ratio": 4,
                                 "max_len": 28, "decoder_dim": 64, "decoder_heads": 4}, 128, (28, 28), 0.2),
    "proteins": Shape("proteins", {"arch": "perceiver", "dim": 128, "depth": 4, "heads": 4, "mlp_ratio": 4,
                                   "max_len": 256, "num_latents": 64, "decoder_dim": 128, "decoder_heads": 4},
                      32, (224, 256), 0.15),
}


def sync(device: torch.device = DEVICE) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device = DEVICE) -> float:
    sync(device)
    t = CLOCK()
    fn()
    sync(device)
    return CLOCK() - t


def rounds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
           device: torch.device = DEVICE) -> dict[str, list[float]]:
    """Seconds per call, ``repeats`` rounds, every candidate once per round (in turn)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        keys = list(fns) if i % 2 == 0 else list(fns)[::-1]          # alternate the order
        for k in keys:
            times[k].append(timed(fns[k], device))
    return times


def compare(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call, the candidates interleaved."""
    return {k: statistics.median(v) for k, v in rounds(fns, repeats, warmup).items()}


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of times[num] / times[den] (same round)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def synthetic_batch(shape: Shape, seed: int = 0, device: torch.device = DEVICE) -> Batch:
    """Chemistry: printable-byte ids; proteins: amino-acid letter ids; physics: Gaussian features.
    Lengths uniform in ``shape.lengths``, padded to the batch maximum."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = shape.lengths
    lengths = torch.randint(lo, hi + 1, (shape.batch,), generator=g)
    n = int(lengths.max())
    pad = torch.arange(n)[None, :] >= lengths[:, None]
    if shape.kind == "continuous":
        x = torch.randn(shape.batch, n, 1, generator=g).masked_fill(pad[..., None], 0.0)
    elif shape.domain == "proteins":
        x = (torch.randint(65, 91, (shape.batch, n), generator=g) + 1).masked_fill(pad, 0)
    else:
        x = torch.randint(33, 127, (shape.batch, n), generator=g).masked_fill(pad, 0)
    return Batch(x, pad).to(device)


def method_cfg(name: str, ratio: float) -> dict[str, Any]:
    """Each method at one fixed mask ratio (the ranged methods with ratio_min = ratio_max)."""
    if name in ("r2mae", "sma_r2"):
        cfg: dict[str, Any] = {"ratio_min": ratio, "ratio_max": ratio}
    else:
        cfg = {"mask_ratio": ratio}
    if name in ("sma", "sma_r2"):
        cfg["num_per_query"] = 4
    return cfg


def precision(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step_fn(model: nn.Module, step: Callable[[], torch.Tensor], bf16: bool = False,
                  device: torch.device = DEVICE) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        with precision(device, bf16):
            loss = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def build(name: str, shape: Shape, device: torch.device = DEVICE, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_method(name, shape.spec(), shape.model, method_cfg(name, shape.ratio)).to(device)


def step_flops(model: nn.Module, batch: Batch, device: torch.device = DEVICE) -> float:
    """FLOPs of one train step (forward + backward) as torch's flop counter sees them."""
    with FlopCounterMode(display=False) as fc:
        model(batch, torch.Generator(device=device).manual_seed(0)).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def mask_selection_fn(model: nn.Module, batch: Batch, device: torch.device = DEVICE) -> Callable[[], object]:
    """SMA's mask selection alone (the no-grad first-layer scores and the top-k)."""
    assert isinstance(model, MaskedAutoencoder)
    x_emb = model.encoder.embed(batch).detach()
    ratio = model.sample_ratio(len(batch.x), None, device)
    g = torch.Generator(device=device).manual_seed(0)
    return lambda: model.guided_mask(batch, x_emb, ratio, g)


def bench_shape(shape: Shape, repeats: int, peak: float, methods: tuple[str, ...] = METHODS) -> list[dict[str, Any]]:
    batch = synthetic_batch(shape)
    fns: dict[str, Callable[[], object]] = {}
    models: dict[str, nn.Module] = {}
    for name in methods:
        m = build(name, shape)
        g = torch.Generator(device=DEVICE).manual_seed(0)
        models[name] = m
        fns[name] = train_step_fn(m, lambda m=m, g=g: m(batch, g).loss)
    fns["sma mask selection"] = mask_selection_fn(models["sma"], batch)
    times = rounds(fns, repeats)
    rows = []
    for name in [*methods, "sma mask selection"]:
        t = statistics.median(times[name])
        row = {"domain": shape.domain, "what": name, "ms": t * 1e3, "vs_random": paired_ratio(times, name, "random")}
        if name in models:
            flops = step_flops(models[name], batch)
            row.update(gflop=flops / 1e9, mfu=flops / t / peak)
        rows.append(row)
    return rows


def bench_precision(repeats: int, batch_size: int = 16) -> list[dict[str, Any]]:
    """bf16-autocast step / fp32 step of ``random`` at three transformer sizes (chemistry batches)."""
    out = []
    for dim, depth in [(128, 4), (256, 4), (512, 8)]:
        heads = dim // 32
        model = {**CHEM, "dim": dim, "depth": depth, "heads": heads, "decoder_dim": dim, "decoder_heads": heads}
        shape = Shape("chemistry", model, batch_size, (40, 60), 0.3)
        batch = synthetic_batch(shape)
        fns = {}
        for bf16 in (False, True):
            m = build("random", shape)
            g = torch.Generator(device=DEVICE).manual_seed(0)
            fns["bf16" if bf16 else "fp32"] = train_step_fn(m, lambda m=m, g=g: m(batch, g).loss, bf16)
        times = rounds(fns, repeats, warmup=1)
        out.append({"size": f"d {dim}, {depth} layers, batch {batch_size}",
                    "fp32_ms": statistics.median(times["fp32"]) * 1e3,
                    "bf16_ms": statistics.median(times["bf16"]) * 1e3,
                    "bf16_vs_fp32": paired_ratio(times, "bf16", "fp32")})
    return out


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
    shape = QUICK["chemistry"]
    batch = synthetic_batch(shape)
    d, depth, heads = CHEM["dim"], CHEM["depth"], CHEM["heads"]
    torch.manual_seed(0)
    ours = build_method("none", shape.spec(), CHEM, {}).encoder.to(DEVICE)
    layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    ref = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d), enable_nested_tensor=False).to(DEVICE)
    x_emb = ours.embed(batch).detach()                                # same input for both
    pad = batch.padding_mask
    fns = {"ours": train_step_fn(ours, lambda: ours.encode_embedded(x_emb, pad).h.square().mean()),
           "torch": train_step_fn(ref, lambda: ref(x_emb, src_key_padding_mask=pad).square().mean())}
    return compare(fns, repeats)


def matmul_peak(size: int = 2048, repeats: int = 5, device: torch.device = DEVICE,
                dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square matmul (fp32 unless ``dtype`` says otherwise), median of ``repeats``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    t = statistics.median(rounds({"mm": lambda: a @ b}, repeats, device=device)["mm"])
    return 2 * size ** 3 / t


def print_table(header: list[str], rows: list[list[str]], left: int = 1) -> None:
    """Plain-text table; the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="smaller select_mask case (batch 64)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--check", action="store_true", help=f"exit 1 when SMA step / random step > {SMA_TARGET}")
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                   help="auto: process CPU time on the CPU with one thread, else wall time")
    p.add_argument("--domains", nargs="+", choices=list(QUICK), default=list(QUICK), help="quick shapes to time")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    cpu_clock = args.clock == "cpu" or (args.clock == "auto" and DEVICE.type == "cpu" and torch.get_num_threads() == 1)
    if cpu_clock and DEVICE.type == "cuda":
        p.error("--clock cpu measures the CPU only; on a GPU use wall time")
    CLOCK = time.process_time if cpu_clock else time.perf_counter
    r = args.repeats
    print(f"device={DEVICE} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"clock={'process CPU time' if cpu_clock else 'wall'}")

    peak = matmul_peak()
    print(f"fp32 matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s\n")
    step_rows = [row for d in args.domains for row in bench_shape(QUICK[d], r, peak)]
    print("Train step per method, each domain's quick shape, same mask ratio as random")
    print_table(["domain", "method", "ratio", "step ms", "vs random", "GFLOP", "of fp32 peak"],
                [[row["domain"], row["what"], f"{QUICK[row['domain']].ratio:g}", f"{row['ms']:.1f}",
                  f"{row['vs_random']:.3f}", f"{row['gflop']:.2f}" if "gflop" in row else "",
                  f"{row['mfu']:.3f}" if "mfu" in row else ""] for row in step_rows], left=2)

    print("\nbf16 autocast vs fp32, random masking, train step")
    prec = bench_precision(max(r // 3, 3))
    print_table(["size", "fp32 ms", "bf16 ms", "bf16 / fp32"],
                [[x["size"], f"{x['fp32_ms']:.1f}", f"{x['bf16_ms']:.1f}", f"{x['bf16_vs_fp32']:.3f}"] for x in prec])

    sel_b = 64 if args.quick else 256
    cross = bench_select(sel_b, 8, 256, 1024, False, max(r // 3, 3))
    selfa = bench_select(sel_b, 4, 128, 128, True, r)
    enc = bench_encoder_vs_torch(r)
    sma = {row["domain"]: row["vs_random"] for row in step_rows if row["what"] == "sma"}
    rows = [(f"SMA step / random step ({d})", v, f"<= {SMA_TARGET}", "") for d, v in sma.items()]
    rows += [
        (f"select_mask speedup, cross B={sel_b} L=256 N=1024", cross["official"] / cross["ours"], ">= 10",
         f"{cross['official']*1e3:.1f} / {cross['ours']*1e3:.1f} ms"),
        (f"select_mask speedup, self B={sel_b} N=128", selfa["official"] / selfa["ours"], ">= 10",
         f"{selfa['official']*1e3:.1f} / {selfa['ours']*1e3:.1f} ms"),
        ("our encoder step / nn.TransformerEncoder", enc["ours"] / enc["torch"], "<= 1.1",
         f"{enc['ours']*1e3:.1f} / {enc['torch']*1e3:.1f} ms"),
    ]
    print()
    print_table(["measure", "ratio", "target", "detail"],
                [[name, f"{ratio:.3f}", target, detail] for name, ratio, target, detail in rows])
    if args.check and any(v > SMA_TARGET for v in sma.values()):
        print(f"FAIL: SMA step / random step above {SMA_TARGET}: {sma}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
