"""A few minutes on one CUDA GPU that show the GPU path works at paper scale; writes a markdown summary.

    python scripts/gpu_check.py --out reports/gpu_check.md          # on a machine with a GPU
    python scripts/gpu_check.py --cpu-smoke --out /tmp/smoke.md     # the same code paths, tiny, on the CPU

Parts (each reported, a failure in one does not stop the others):
  1. every pretraining method at the paper model size of each domain (``config/paper.yaml``) for
     up to ``--steps`` steps (at most ``--run-seconds`` each) in bf16 autocast on synthetic batches
     of the domain's shape, all methods at SMA's mask ratio of the domain: steps/s, tokens/s,
     FLOP/s against the bf16 matmul peak, peak memory. A run that runs out of GPU memory is
     retried at half the batch (the batch used is reported). SMA step / random step is measured
     apart, the two models stepped in turn (``--ratio-rounds`` rounds, median of the per-round
     ratios), so that the order of the runs does not enter it;
  2. one finetune epoch (``pipeline_src.evaluate.finetune.finetune``, epochs = 1) and one linear
     evaluation (frozen features + ``linear_probe``) on ESOL from the test fixtures, with the
     chemistry encoder just pretrained by ``random``;
  3. the CI config through ``snakemake --cores 8 --resources gpu=1 --configfile config/ci.yaml``
     in a temporary copy of the workflow, trimmed to two methods (random, sma) and one seed: with
     one GPU its jobs that use the GPU run one at a time, and the whole CI config (98 of them, a few
     seconds each, mostly process start) does not fit the check's budget; ``--snakemake-full``
     runs all of it. On a GPU it fails if a pretrained checkpoint or an encoder result records
     another device than CUDA. With ``--cpu-smoke`` a dry run (``-n``).
``--parts`` picks the parts (default all three); ``--domains`` the domains of part 1.
Without CUDA (and without ``--cpu-smoke``) it says so and exits 0. Exit status 1 when a part failed.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]   # this checkout's package and bench helpers

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench_methods import METHODS, Shape, matmul_peak, method_cfg, sync, synthetic_batch  # noqa: E402
from pipeline_src.config import load_config  # noqa: E402
from pipeline_src.spec import FinetuneSpec, resolve_pretrain  # noqa: E402
from pipeline_src.atomic import write_bytes_atomic  # noqa: E402
from pipeline_src.methods import build_method  # noqa: E402
from pipeline_src.data.encode import Encoded  # noqa: E402
from pipeline_src.train.diagnostic import diagnostic  # noqa: E402
from pipeline_src.train.diversity import mask_diversity  # noqa: E402

WORKFLOW_FILES = ["Snakefile", "workflow", "config", "tests/fixtures"]
PARTS = ("pretrain", "evaluate", "snakemake")
TRIM = "methods_run: [random, sma]\nseeds: [0]\npretrain_seeds: [0]\n"   # part 3 unless --snakemake-full
SAMPLE_LENGTHS = {"chemistry": (30, 60), "proteins": (512, 1024), "physics": (28, 28)}  # synthetic (min, max)
EVAL_TASK = "esol"


@dataclass
class Run:
    domain: str
    method: str
    batch: int
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    flops_per_step: float = 0.0
    peak_mem: int | None = None
    loss: float = math.nan
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    own_model: str = ""          # the method's own model and batch (model_by_method), when it has one
    heldout: dict[str, Any] = field(default_factory=dict)   # held-out ratio and mask diversity after the steps

    @property
    def step_s(self) -> float:
        return self.seconds / self.steps if self.steps else math.nan


# --- part 1: pretraining steps at paper size --------------------------------------------------

def smoke_model(model: dict[str, Any]) -> dict[str, Any]:
    """A tiny model of the same kind (``--cpu-smoke``)."""
    return {**model, "dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2, "num_latents": 8, "decoder_dim": 32,
            "decoder_heads": 2, "max_len": min(int(model["max_len"]), 64)}


def paper_shapes(smoke: bool, domains: list[str] | None = None) -> dict[str, tuple[Shape, dict[str, Any], float]]:
    """domain -> (shape, paper config, learning rate). ``smoke``: tiny models, batches and lengths;
    ``domains``: only these (an unknown name fails, naming the known ones)."""
    cfg = load_config(ROOT / "config" / "config.yaml", [ROOT / "config" / "paper.yaml"])
    unknown = sorted(set(domains or ()) - set(cfg["domains"]))
    if unknown:
        raise SystemExit(f"gpu_check: unknown domain(s) {unknown}; config/paper.yaml has {sorted(cfg['domains'])}")
    out = {}
    for domain, d in cfg["domains"].items():
        if domains and domain not in domains:
            continue
        base = resolve_pretrain(cfg, d["corpus"], "random")   # the domain's model and recipe, as the jobs resolve them
        model = dict(base.model)
        ratio = float(resolve_pretrain(cfg, d["corpus"], "sma").method_cfg["mask_ratio"])
        lo, hi = SAMPLE_LENGTHS.get(domain, (model["max_len"], model["max_len"]))
        batch = int(base.train.batch_size)
        if smoke:
            model = smoke_model(model)
            batch = 4
            if lo < hi:                                             # variable-length (discrete) inputs
                lo, hi = min(lo, 16), min(hi, 64)
        hi = min(hi, int(model["max_len"]))
        out[domain] = (Shape(domain, model, batch, (min(lo, hi), hi), ratio), cfg, base.train.lr)
    return out


RATIO_KEYS = ("mask_ratio", "ratio_min", "ratio_max")


def run_cfg(cfg: dict[str, Any], domain: str, name: str, ratio: float) -> dict[str, Any]:
    """The paper's settings of ``name`` in ``domain``, at mask ratio ``ratio`` (ranged methods: [ratio, ratio])."""
    base = {k: v for k, v in resolve_pretrain(cfg, cfg["domains"][domain]["corpus"], name).method_cfg.items()
            if k not in RATIO_KEYS}
    return {**base, **{k: v for k, v in method_cfg(name, ratio).items() if k in RATIO_KEYS}}


def method_shape(shape: Shape, cfg: dict[str, Any], name: str, smoke: bool) -> tuple[Shape, str]:
    """The domain's shape, or the method's own model and batch size where the config gives it one
    (``model_by_method`` / ``pretrain_by_method``, e.g. MetaMAE's), with a line saying so."""
    corpus = cfg["domains"][shape.domain]["corpus"]
    job = resolve_pretrain(cfg, corpus, name)
    domain = resolve_pretrain(cfg, corpus, "random")
    if dict(job.model) == dict(domain.model) and job.train.batch_size == domain.train.batch_size:
        return shape, ""
    m = dict(job.model)
    note = (f"its own model: {m['arch']}, d {m['dim']}, {m['depth']} layers, {m['heads']} heads, "
            f"{m.get('pos_embedding', 'learned')} positions; batch {job.train.batch_size}")
    if smoke:
        return replace(shape, model=smoke_model(m)), note + " (tiny here)"
    return replace(shape, model=m, batch=job.train.batch_size), note


def is_oom(e: BaseException) -> bool:
    """CUDA out of memory, including the cuBLAS / cuDNN allocation failures raised as RuntimeError."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


N_BATCHES = 4          # synthetic batches per run, cycled (the default warm-up steps through each one)


def make_stepper(shape: Shape, name: str, mcfg: dict[str, Any], lr: float, device: torch.device):
    """(model, step(i) -> loss, tokens per batch): one bf16-autocast AdamW step on batch ``i % N_BATCHES``."""
    torch.manual_seed(0)
    model = build_method(name, shape.spec(), shape.model, mcfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    batches = [synthetic_batch(shape, seed=i, device=device) for i in range(N_BATCHES)]
    tokens = [int(b.n_valid.sum()) for b in batches]
    g = torch.Generator(device=device).manual_seed(0)

    def step(i: int) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(batches[i % len(batches)], g, i)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return out.loss.detach()

    return model, step, tokens


HELDOUT_SAMPLES = 256   # synthetic held-out samples (a seed no training batch uses) for the check below


def synthetic_heldout(shape: Shape, n: int = HELDOUT_SAMPLES, seed: int = 10_000) -> Encoded:
    """``n`` synthetic samples of the domain's shape as an ``Encoded`` corpus (bytes = ids - 1)."""
    b = synthetic_batch(replace(shape, batch=n), seed=seed, device=torch.device("cpu"))
    ids = np.array([f"synthetic{i}" for i in range(n)], dtype=object)
    if shape.kind == "continuous":
        return Encoded("continuous", ids, values=b.x[..., 0].numpy().astype(np.float32))
    lens = b.n_valid.numpy().astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = np.concatenate([b.x[i, :lens[i]].numpy() - 1 for i in range(n)]).astype(np.uint8)
    return Encoded("discrete", ids, tokens=tokens, offsets=offsets)


def heldout_check(model: torch.nn.Module, shape: Shape, device: torch.device) -> dict[str, Any]:
    """The pretraining job's own end-of-run numbers (``diagnostic`` and ``mask_diversity``, the same
    functions) on synthetic held-out samples: ``ratio`` (held-out loss / frequency baseline) and the
    mask diversity, masks drawn as after any warm-up. The inputs are random, so a ratio near 1 is
    the best a model can do here: the check shows that the numbers are computed at paper size and
    whether the masks collapse, not what a corpus teaches."""
    held = synthetic_heldout(shape)
    bs = max(1, min(shape.batch, 32))
    diag = diagnostic(model, held, held, int(shape.model["max_len"]), {"mask_ratio": 0.3, "batch_size": bs}, device)
    div = mask_diversity(model, held, int(shape.model["max_len"]), bs, device, step=None)
    return {"ratio": diag["ratio"], "mask_diversity": div}


def train_steps(shape: Shape, name: str, mcfg: dict[str, Any], lr: float, device: torch.device, steps: int,
                max_seconds: float, warmup: int, keep: dict[str, Any]) -> Run:
    run = Run(shape.domain, name, shape.batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, step, tokens = make_stepper(shape, name, mcfg, lr, device)

    with FlopCounterMode(display=False) as fc:                      # the first warm-up step, counted
        step(0)
    run.flops_per_step = float(fc.get_total_flops())
    for i in range(1, warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    loss = None
    while run.steps < steps and (run.steps == 0 or time.perf_counter() - t0 < max_seconds):
        loss = step(warmup + run.steps)
        run.tokens += tokens[(warmup + run.steps) % len(tokens)]
        run.steps += 1
    sync(device)
    run.seconds = time.perf_counter() - t0
    run.loss = float(loss) if loss is not None else math.nan
    if not math.isfinite(run.loss):
        run.status = "FAILED: loss not finite"
    run.peak_mem = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    try:
        run.heldout = heldout_check(model, shape, device)
    except Exception as e:  # noqa: BLE001  (reported as this run's failure; not retried at a smaller batch)
        run.status = f"FAILED: held-out check: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    if shape.domain == "chemistry" and name == "random":
        keep["encoder"] = copy.deepcopy(model.encoder).cpu()
        keep["model_cfg"] = shape.model
    return run


def paired_ratio(shape: Shape, cfg: dict[str, Any], lr: float, device: torch.device, rounds: int,
                 warmup: int) -> float:
    """SMA step / random step on the domain's shape: both models in memory, one step of each per
    round (which goes first alternates), each step timed on its own; the median of the per-round ratios."""
    steppers = {name: make_stepper(shape, name, run_cfg(cfg, shape.domain, name, shape.ratio), lr, device)[1]
                for name in ("random", "sma")}
    for i in range(warmup):
        for step in steppers.values():
            step(i)
    ratios = []
    for r in range(rounds):
        t = {}
        for name in (("random", "sma") if r % 2 == 0 else ("sma", "random")):
            sync(device)
            t0 = time.perf_counter()
            steppers[name](warmup + r)
            sync(device)
            t[name] = time.perf_counter() - t0
        ratios.append(t["sma"] / t["random"])
    return statistics.median(ratios)


def pretraining_part(device: torch.device, smoke: bool, steps: int, max_seconds: float, warmup: int,
                     keep: dict[str, Any], log, domains: list[str] | None = None, ratio_rounds: int = 0,
                     ratios: dict[str, Any] | None = None) -> list[Run]:
    """Part 1. With ``ratio_rounds``, ``ratios[domain]`` gets SMA step / random step (:func:`paired_ratio`;
    a failure there is recorded as its message)."""
    runs = []
    for domain, (shape, cfg, lr) in paper_shapes(smoke, domains).items():
        for name in METHODS:
            own, own_model = method_shape(shape, cfg, name, smoke)
            mcfg, batch, notes = run_cfg(cfg, domain, name, own.ratio), own.batch, []
            while True:
                oom = None
                try:
                    run = train_steps(replace(own, batch=batch), name, mcfg, lr, device, steps, max_seconds,
                                      warmup, keep)
                except Exception as e:  # noqa: BLE001  (reported, the other runs go on)
                    if is_oom(e):
                        oom = (str(e).splitlines() or ["out of memory"])[0]
                    else:
                        run = Run(domain, name, batch, status=f"FAILED: {type(e).__name__}: {e}")
                        log(traceback.format_exc())
                free_memory(device)
                if oom is None:
                    break
                notes.append(f"out of memory at batch {batch}")
                if batch == 1:
                    run = Run(domain, name, batch, status=f"FAILED: out of memory at batch 1 ({oom})")
                    break
                batch //= 2
            run.notes += notes
            run.own_model = own_model
            log(f"{domain:<9} {name:<8} batch {run.batch:>4}  {run.steps:>4} steps  "
                f"{run.step_s * 1e3:8.1f} ms/step  {run.status}")
            runs.append(run)
        if ratio_rounds and ratios is not None:
            try:
                ratios[domain] = paired_ratio(shape, cfg, lr, device, ratio_rounds, warmup)
            except Exception as e:  # noqa: BLE001
                log(traceback.format_exc())
                ratios[domain] = f"FAILED: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            free_memory(device)
            r = ratios[domain]
            log(f"{domain:<9} SMA step / random step, interleaved: {r if isinstance(r, str) else format(r, '.3f')}")
    return runs


# --- part 2: one finetune epoch, one linear evaluation ----------------------------------------

def prepare_task(work: Path, dataset: str) -> Path:
    """download -> prepare -> scaffold split of a fixture task; returns the processed folder."""
    from pipeline_src.config import load_registry
    from pipeline_src.data.download import fetch_dataset
    from pipeline_src.data.prepare import prepare_dataset
    from pipeline_src.data.splits import write_split

    entry = load_registry(ROOT / "tests" / "fixtures" / "datasets.yaml")[dataset]
    raw, processed = work / "raw" / dataset, work / "processed" / dataset
    fetch_dataset(dataset, entry, raw, [ROOT / "tests" / "fixtures" / "mirror"], timeout=5, retries=0, log=lambda *a: None)
    prepare_dataset(dataset, entry, raw, processed)
    write_split(processed, "scaffold", 0, processed / "splits" / "scaffold.parquet",
                fractions=tuple(entry.get("split", {}).get("fractions", (0.8, 0.1, 0.1))))
    return processed


def evaluation_part(device: torch.device, keep: dict[str, Any], work: Path, log) -> list[dict[str, Any]]:
    from pipeline_src.config import load_registry
    from pipeline_src.data.encode import load_encoded
    from pipeline_src.evaluate.features import extract_features
    from pipeline_src.evaluate.finetune import finetune
    from pipeline_src.evaluate.linear import linear_probe
    from pipeline_src.evaluate.run import plan_folds

    if "encoder" not in keep:
        return [{"what": "finetune / linear", "status": "FAILED: no chemistry encoder (the random run failed)"}]
    entry = load_registry(ROOT / "tests" / "fixtures" / "datasets.yaml")[EVAL_TASK]
    task, metric = entry["task"], entry["metric"]
    processed = prepare_task(work, EVAL_TASK)
    data = load_encoded(processed)
    ids, y, folds = plan_folds(processed, ["scaffold"], EVAL_TASK, task, metric, max_train_rows=None, min_class_examples=1)
    assert list(ids) == [str(i) for i in data.ids], "the encoded inputs and the table list different ids"
    fold = folds["scaffold"]
    max_len, dim = int(keep["model_cfg"]["max_len"]), int(keep["model_cfg"]["dim"])
    rows = []
    parts = {
        "finetune, 1 epoch": lambda enc: finetune(enc, dim, data, y, fold, task, metric,
                                                   FinetuneSpec(epochs=1, batch_size=32, lr=1e-4, weight_decay=0.01,
                                                                patience=10), max_len, 0, device, log=lambda *a: None),
        "linear evaluation": lambda enc: linear_probe(extract_features(enc, data, max_len, 256, device),
                                                      y, fold, task, metric, 0),
    }
    for what, fn in parts.items():
        t0 = time.perf_counter()
        try:
            res = fn(copy.deepcopy(keep["encoder"]))
            ok = math.isfinite(res.test) and math.isfinite(res.valid)
            rows.append({"what": what, "seconds": time.perf_counter() - t0, "valid": res.valid, "test": res.test,
                         "n": res.n, "status": "ok" if ok else "FAILED: metric not finite"})
        except Exception as e:  # noqa: BLE001
            log(traceback.format_exc())
            rows.append({"what": what, "seconds": time.perf_counter() - t0, "status": f"FAILED: {type(e).__name__}: {e}"})
        log(f"{what}: {rows[-1]['status']}")
        free_memory(device)
    for r in rows:
        r.update(task=EVAL_TASK, metric=metric)
    return rows


# --- part 3: the CI config through snakemake --------------------------------------------------

def copy_workflow(dest: Path) -> Path:
    for rel in WORKFLOW_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def job_devices(wd: Path) -> dict[str, int]:
    """How many pretrained checkpoints (``meta.json``) and encoder results recorded each device (the
    checkpoints of method ``none``, never trained, and the classical baselines' results are left out)."""
    from pipeline_src.plan import BASELINE_KINDS
    from pipeline_src.train.pretrain import NO_PRETRAINING

    ckpt, res = wd / "data" / "checkpoints", wd / "data" / "results"
    files = [f for f in ckpt.rglob("meta.json") if f.relative_to(ckpt).parts[1] != NO_PRETRAINING] + \
        [f for f in res.rglob("*.json") if f.relative_to(res).parts[1] not in BASELINE_KINDS]
    seen: Counter[str] = Counter()
    for f in files:
        try:
            seen[str(json.loads(f.read_text()).get("device", "none recorded"))] += 1
        except (OSError, ValueError, AttributeError):
            seen["unreadable"] += 1
    return dict(sorted(seen.items()))


def snakemake_part(work: Path, cores: int, dry_run: bool, timeout_s: float, log, full: bool = False,
                   expect_gpu: bool = False) -> dict[str, Any]:
    """Part 3. ``expect_gpu``: it fails unless every pretrained checkpoint and encoder result
    recorded a CUDA device."""
    wd = copy_workflow(work / "workflow_copy")
    configs = ["config/ci.yaml"]
    if not full:
        (wd / "gpu_check_trim.yaml").write_text(TRIM)
        configs.append("gpu_check_trim.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", "gpu=1",
           *(["-n"] if dry_run else []), "--configfile", *configs]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.setdefault("MASKBENCH_GPU_LOCK_DIR", str(work / "gpu_locks"))
    t0 = time.perf_counter()
    log_path = work / "snakemake.log"
    with open(log_path, "w") as out:                                 # its own process group: a timeout ends every job
        proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    seconds = time.perf_counter() - t0
    tail = ("" if rc is not None else f"timed out after {timeout_s:.0f} s\n") + log_path.read_text(errors="replace")[-3000:]
    results = sorted((wd / "data" / "results").rglob("*.json")) if (wd / "data" / "results").is_dir() else []
    report = wd / "reports" / "all.md"
    devices = job_devices(wd)
    on_cpu = {d: n for d, n in devices.items() if not d.startswith("cuda")}
    ok = rc == 0 and (dry_run or report.exists()) and not (expect_gpu and on_cpu)
    out = {"command": " ".join(["snakemake", *cmd[3:]]), "trim": None if full else TRIM, "dry_run": dry_run, "rc": rc, "seconds": seconds,
           "results": len(results), "report": report.exists(), "devices": devices, "status": "ok" if ok else "FAILED", "tail": tail}
    log(f"snakemake ({'dry run' if dry_run else 'CI config'}): rc {rc} in {seconds:.0f} s, {len(results)} results")
    return out


# --- summary ----------------------------------------------------------------------------------

def fmt(x: float, spec: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def describe(shape: Shape) -> str:
    m = shape.model
    arch = f"Perceiver-IO, {m['num_latents']} latents" if m.get("arch") == "perceiver" else "transformer"
    lo, hi = shape.lengths
    return (f"{shape.domain}: {arch}, d {m['dim']}, {m['depth']} layers, {m['heads']} heads; batch {shape.batch} "
            f"of {lo if lo == hi else f'{lo}-{hi}'} tokens; mask ratio {shape.ratio:g}")


def summary(env: dict[str, Any], runs: list[Run], evals: list[dict[str, Any]] | None, snake: dict[str, Any] | None,
            total_s: float, smoke: bool, shapes: list[Shape], ratios: dict[str, Any],
            ratio_rounds: int) -> tuple[str, int]:
    """The markdown summary and the number of failed parts (``evals`` / ``snake`` None: part not run)."""
    failed = [r for r in runs if r.status != "ok"] + [e for e in evals or [] if e["status"] != "ok"] + \
        [v for v in ratios.values() if isinstance(v, str)]
    if snake is not None and snake["status"] != "ok":
        failed.append(snake)
    lines = ["# GPU check" + (" (CPU smoke run: tiny sizes, not paper scale)" if smoke else ""), "",
             f"Overall: **{'ok' if not failed else f'{len(failed)} part(s) FAILED'}** in {total_s / 60:.1f} min.", "",
             "## Machine", "",
             f"- device: {env['device']}", f"- torch {env['torch']}, CUDA {env['cuda']}, Python {env['python']}",
             f"- matmul peak measured here: fp32 {env['fp32_peak'] / 1e12:.2f} TFLOP/s, "
             f"bf16 {env['bf16_peak'] / 1e12:.2f} TFLOP/s", "",
             f"## Pretraining steps (bf16 autocast, {'tiny models' if smoke else 'paper model sizes'}, synthetic batches)", "",
             *[f"- {describe(s)}" for s in shapes],
             *[f"- {r.domain}, {r.method}: {r.own_model}" for r in runs if r.own_model], "",
             "All methods of a domain at SMA's mask ratio of that domain (r2mae, sma_r2: ratio_min = ratio_max); "
             "metamae with the paper's decoder depth. FLOP share: counted FLOP/s over the bf16 matmul peak.", "",
             "| domain | method | batch | steps | ms/step | steps/s | tokens/s | FLOP share | peak memory GB "
             "| last loss | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        share = r.flops_per_step / r.step_s / env["bf16_peak"] if r.steps else math.nan
        mem = fmt(r.peak_mem / 2**30, ".2f") if r.peak_mem is not None else "–"
        status = "; ".join([r.status, *r.notes])
        lines.append(f"| {r.domain} | {r.method} | {r.batch} | {r.steps} | {fmt(r.step_s * 1e3)} | "
                     f"{fmt(1 / r.step_s if r.steps else math.nan, '.2f')} | "
                     f"{fmt(r.tokens / r.seconds if r.seconds else math.nan, ',.0f')} | {fmt(share, '.3f')} | {mem} | "
                     f"{fmt(r.loss, '.3f')} | {status} |")
    lines += ["", "Held-out ratio and mask diversity of each model after its steps, from the functions every "
              f"pretraining job ends with (`diagnostic`, `mask_diversity`), on {HELDOUT_SAMPLES} synthetic samples of "
              "the domain's shape: **synthetic random inputs**, so a ratio near 1 is the best possible here (nothing "
              "to learn), and the masks are drawn as after any warm-up. Masking entropy and Jaccard of two views: the "
              "method's (random masking's at the same counts).", "",
              "| domain | method | held-out loss / baseline | masking entropy | Jaccard of two views | identical pairs "
              "| verdict |", "|---|---|---:|---:|---:|---:|---|"]
    for r in runs:
        div = r.heldout.get("mask_diversity")
        cells = ["n/a (no masks)"] * 3 + ["n/a"] if not div else [
            f"{fmt(div['method']['entropy'], '.2f')} ({fmt(div['random']['entropy'], '.2f')})",
            f"{fmt(div['method']['jaccard'], '.2f')} ({fmt(div['random']['jaccard'], '.2f')})",
            fmt(div['method']['identical_share'], '.2f'), div["verdict"]]
        ratio = r.heldout.get("ratio")
        lines.append(f"| {r.domain} | {r.method} | {fmt(ratio, '.3f') if ratio is not None else 'n/a'} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"SMA step / random step on each domain's shape, the two models stepped in turn ({ratio_rounds} "
              "rounds, which goes first alternating, each step timed alone; median of the per-round ratios). "
              "From the table above (runs one after another) for comparison.", "",
              "| domain | SMA step / random step, interleaved | from the runs above |", "|---|---:|---:|"]
    for domain in dict.fromkeys(r.domain for r in runs):
        by = {r.method: r for r in runs if r.domain == domain and r.steps and r.status == "ok"}
        seq = by["sma"].step_s / by["random"].step_s if {"sma", "random"} <= set(by) and \
            by["sma"].batch == by["random"].batch else math.nan
        paired = ratios.get(domain, math.nan)
        lines.append(f"| {domain} | {paired if isinstance(paired, str) else fmt(paired, '.3f')} | {fmt(seq, '.3f')} |")
    lines += ["", f"## Evaluation ({EVAL_TASK} fixture, scaffold split, chemistry encoder pretrained above by random)", "",
              "| protocol | seconds | valid | test | rows train/valid/test | status |", "|---|---:|---:|---:|---|---|"]
    if evals is None:
        lines.append("| not run (`--parts`) | | | | | |")
    for e in evals or []:
        n = e.get("n") or {}
        lines.append(f"| {e['what']} | {fmt(e.get('seconds'))} | {fmt(e.get('valid'), '.3f')} | {fmt(e.get('test'), '.3f')} | "
                     f"{'/'.join(str(n[k]) for k in ('train', 'valid', 'test')) if n else '–'} | {e['status']} |")
    lines += ["", "## CI config through Snakemake", ""]
    if snake is None:
        lines.append("Not run (`--parts`).")
    else:
        trim = ("" if snake["trim"] is None else
                "; `gpu_check_trim.yaml`: " + ", ".join(f"`{line}`" for line in snake["trim"].splitlines()))
        lines += [f"`{snake['command']}` (in a temporary copy of the workflow{trim}){' — dry run' if snake['dry_run'] else ''}: "
                  f"exit status {snake['rc']}, {snake['seconds']:.0f} s, {snake['results']} result files, "
                  f"report {'written' if snake['report'] else 'not written'}: **{snake['status']}**.", "",
                  "Devices recorded by the checkpoints and results: " +
                  (", ".join(f"{d} {n}" for d, n in snake["devices"].items()) or "none") + "."]
        if snake["status"] != "ok":
            lines += ["", "```", snake["tail"], "```"]
    return "\n".join(lines) + "\n", len(failed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="reports/gpu_check.md", help="markdown summary (written atomically)")
    p.add_argument("--cpu-smoke", action="store_true", help="no GPU needed: tiny sizes, few steps, snakemake dry run")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)} (evaluate "
                   "needs pretrain with chemistry)")
    p.add_argument("--domains", default=None, help="comma-separated domains of part 1 (default: every domain)")
    p.add_argument("--ratio-rounds", type=int, default=None, help="rounds of the SMA / random ratio (default 30; smoke 3)")
    p.add_argument("--snakemake-full", action="store_true", help="the whole CI config, not two methods and one seed")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 200; smoke 3)")
    p.add_argument("--run-seconds", type=float, default=None, help="time cap per run (default 6 s; smoke 2 s)")
    p.add_argument("--warmup", type=int, default=N_BATCHES + 1,
                   help="untimed steps per run (the first one counts FLOPs; the default steps through every batch)")
    p.add_argument("--cores", type=int, default=8, help="snakemake --cores")
    p.add_argument("--snakemake-timeout", type=float, default=330.0, help="seconds (then every job is ended)")
    a = p.parse_args(argv)
    parts = [x for x in a.parts.split(",") if x]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--parts: {a.parts!r}; choose from {','.join(PARTS)}")
    domains = [x for x in a.domains.split(",") if x] if a.domains else None
    if not torch.cuda.is_available() and not a.cpu_smoke:
        print("gpu_check: no CUDA GPU on this machine; nothing to check (--cpu-smoke runs the CPU smoke version).")
        return 0
    smoke = a.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    steps = a.steps if a.steps is not None else (3 if smoke else 200)
    ratio_rounds = a.ratio_rounds if a.ratio_rounds is not None else (3 if smoke else 30)
    run_seconds = a.run_seconds if a.run_seconds is not None else (2.0 if smoke else 6.0)
    if smoke:
        torch.set_num_threads(1)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    size = 256 if smoke else 8192
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    env = {"device": name,
           "torch": torch.__version__, "cuda": torch.version.cuda or "none", "python": platform.python_version(),
           "fp32_peak": matmul_peak(size, 5, device), "bf16_peak": matmul_peak(size, 5, device, torch.bfloat16)}
    log(f"{env['device']}: fp32 {env['fp32_peak'] / 1e12:.2f}, bf16 {env['bf16_peak'] / 1e12:.2f} TFLOP/s")
    keep: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    runs, evals, snake = [], None, None
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        if "pretrain" in parts:
            runs = pretraining_part(device, smoke, steps, run_seconds, a.warmup, keep, log, domains, ratio_rounds, ratios)
        if "evaluate" in parts:
            try:
                evals = evaluation_part(device, keep, work, log)
            except Exception as e:  # noqa: BLE001  (e.g. the fixture task cannot be prepared)
                log(traceback.format_exc())
                evals = [{"what": "finetune / linear", "status": f"FAILED: {type(e).__name__}: {e}"}]
        if "snakemake" in parts:
            snake = snakemake_part(work, a.cores, smoke, a.snakemake_timeout, log, a.snakemake_full,
                                   expect_gpu=device.type == "cuda")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shapes = [shape for shape, _, _ in paper_shapes(smoke, domains).values()] if "pretrain" in parts else []
    text, n_failed = summary(env, runs, evals, snake, time.perf_counter() - t_start, smoke, shapes, ratios,
                             ratio_rounds)
    write_bytes_atomic(a.out, text.encode("utf-8"))
    log(f"wrote {a.out}: {'ok' if not n_failed else f'{n_failed} part(s) failed'}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
