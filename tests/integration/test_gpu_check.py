"""scripts/gpu_check.py: the CPU smoke version of the GPU check runs every part, and without a GPU
the plain command says so and does nothing."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
METHODS = ["random", "sma", "r2mae", "sma_r2", "span", "metamae"]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod                                   # (dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_smoke_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert "Overall: **ok**" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and line.endswith(" ok |")]
    trained = {(c[0].strip("| "), c[1]) for c in rows if len(c) == 11}
    assert trained == {(d, m) for d in ("chemistry", "proteins", "physics") for m in METHODS}
    for domain in ("chemistry", "proteins", "physics"):               # finite SMA / random ratios per domain
        line = next(line for line in text.splitlines() if line.startswith(f"| {domain} | ") and line.count("|") == 4)
        assert float(line.split("|")[2]) > 0 and float(line.split("|")[3]) > 0
    assert "| finetune, 1 epoch |" in text and "| linear evaluation |" in text
    assert "--resources gpu=1 -n --configfile config/ci.yaml gpu_check_trim.yaml" in text and "exit status 0" in text
    assert "`methods_run: [random, sma]`" in text


def test_parts_and_the_whole_ci_config(tmp_path: Path) -> None:
    """``--parts snakemake --snakemake-full``: only the dry run, of the CI config untrimmed."""
    out = tmp_path / "gpu_check.md"
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--parts", "snakemake", "--snakemake-full",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert "-n --configfile config/ci.yaml`" in text and "gpu_check_trim" not in text
    assert "| not run (`--parts`) |" in text and "| chemistry |" not in text
    bad = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--parts", "pretrain,nothing", "--out",
                          str(tmp_path / "x.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "choose from pretrain,evaluate,snakemake" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the plain command runs the real check")
def test_without_gpu_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "no CUDA GPU" in r.stdout
    assert not out.exists()


def test_out_of_memory_halves_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    gc = _load()
    tried: list[tuple[str, int]] = []

    def fake(shape, name, mcfg, lr, device, steps, max_seconds, warmup, keep):
        tried.append((name, shape.batch))
        assert shape.model.get("pos_embedding") == ("sincos" if name == "metamae" else None)  # paper.yaml: its own model
        if name == "metamae" and shape.batch > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return gc.Run(shape.domain, name, shape.batch, steps=1, seconds=0.1)

    monkeypatch.setattr(gc, "train_steps", fake)
    runs = gc.pretraining_part(torch.device("cpu"), True, 1, 1.0, 1, {}, lambda msg: None)
    meta = [r for r in runs if r.method == "metamae"]
    assert [r.batch for r in meta] == [1, 1, 1] and all(r.status == "ok" for r in runs)
    assert meta[0].own_model.startswith("its own model: transformer, d 256, 12 layers")
    assert meta[0].notes == ["out of memory at batch 4", "out of memory at batch 2"]
    assert [b for n, b in tried if n == "metamae"] == [4, 2, 1] * 3


def test_job_devices_counts_encoder_jobs_only(tmp_path: Path) -> None:
    """Part 3 on a GPU fails when an encoder job recorded the CPU; the untrained checkpoints of method
    none and the classical baselines' results do not count."""
    import json

    gc = _load()
    files = {"data/checkpoints/moses/none/seed0/meta.json": "cpu",
             "data/checkpoints/moses/sma/seed0/meta.json": "cuda:0",
             "data/results/esol/rf_morgan/classical/scaffold/seed0.json": "cpu",
             "data/results/esol/none/linear/scaffold/seed0.json": "cpu",
             "data/results/esol/sma/linear/scaffold/seed0.json": "cuda:0",
             "data/results/esol/random/finetune/scaffold/seed0.json": "cpu"}
    for rel, device in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(json.dumps({"device": device}))
    assert gc.job_devices(tmp_path) == {"cpu": 2, "cuda:0": 2}
