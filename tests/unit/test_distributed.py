"""Data-parallel pretraining under torchrun (gloo on the CPU): sharding, equality with one process,
resume, and the real CLI.

Run as a script under torchrun it is the worker of these tests (one launch, three runs: FULL
uninterrupted; CUT stopped after STOP_AFTER steps, then resumed from its ``last.pt`` by a fresh
model, optimizer and sampler):
``python -m torch.distributed.run --nproc_per_node 2 test_distributed.py FULL CUT STEPS STOP_AFTER``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from pipeline_src.config import deep_merge  # noqa: E402
from pipeline_src.batch import Batch  # noqa: E402
from pipeline_src.train.distributed import shard  # noqa: E402
from test_train_support import ToyMethod, ToyOutput, toy_corpus, train_cfg  # noqa: E402

SEQ = 12  # every sample has this length, so every sample has the same number of masked tokens
BATCH = 16


class DetMethod(ToyMethod):
    """ToyMethod without randomness: no dropout, and a fixed mask (every third position, shifted
    each step). Every sample then weighs the same in the token-mean loss, so the mean over two
    equal shards is the mean over the whole batch and two ranks compute one process's gradient."""

    name = "det"

    def __init__(self, spec, model_cfg, method_cfg) -> None:
        super().__init__(spec, model_cfg, method_cfg)
        for m in self.encoder:
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0

    def forward(self, batch: Batch, generator=None, step: int = 0) -> ToyOutput:
        x, pad = batch.x, batch.padding_mask
        n = pad.shape[1]
        mask = ((torch.arange(n, device=pad.device) + step) % 3 == 0)[None, :] & ~pad
        h = self.embed(x) + self.pos_embed[:, :n]
        h = torch.where(mask[..., None], self.mask_token.expand_as(h), h)
        visible = (~mask & ~pad).float()[..., None]
        context = (h * visible).sum(1, keepdim=True) / visible.sum(1, keepdim=True).clamp(min=1.0)
        out = self.head(self.encoder(h + context))
        return ToyOutput(F.cross_entropy(out[mask].float(), x[mask]), {"mask_ratio": float(mask.float().mean())})


def det_run(out_dir: Path, steps: int, stop_after: int | None = None) -> dict:
    from pipeline_src.train.loop import pretrain

    corpus = toy_corpus(96, min_len=SEQ, max_len=SEQ)
    torch.manual_seed(0)
    method = DetMethod(corpus.spec(SEQ), {"dim": 16}, {})
    return pretrain(method, corpus, train_cfg(steps, 3, batch_size=BATCH), SEQ, out_dir, seed=0, device="cpu",
                    threads=1, model_cfg=method.model_cfg, method_cfg=method.method_cfg, stop_after=stop_after,
                    progress=False)


def _torchrun(args: list[str], cwd: Path, timeout: int = 180, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASKBENCH_DIST_BACKEND="gloo", MASKBENCH_DEVICE="",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _losses(out_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_shard_slices_and_weights():
    idx = np.arange(10)
    parts = [shard(idx, r, 2) for r in range(2)]
    assert [p.tolist() for p, _ in parts] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and [w for _, w in parts] == [1.0, 1.0]
    parts = [shard(np.arange(5), r, 2) for r in range(2)]
    assert [len(p) for p, _ in parts] == [3, 2]
    v = np.array([1.0, 2.0, 4.0, 8.0, 16.0])  # per-sample losses: DDP's average of the weighted means is the mean
    assert sum(w * v[p].mean() for p, w in parts) / 2 == pytest.approx(v.mean())
    assert [w for _, w in parts] == pytest.approx([2 * 3 / 5, 2 * 2 / 5])
    empty = [shard(np.arange(1), r, 2) for r in range(2)]
    assert empty[0][1] == 2.0 and empty[1][1] == 0.0 and len(empty[1][0]) == 1  # a stand-in sample, weight 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One process; two ranks uninterrupted; two ranks stopped after 4 steps, then resumed."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("ddp")
    steps = 8
    single, full, cut = base / "single", base / "full", base / "cut"
    det_run(single, steps)
    r = _torchrun([str(HERE / "test_distributed.py"), str(full), str(cut), str(steps), "4"], cwd=base)
    return {"single": single, "full": full, "cut": cut, "stdout": r.stdout}


def test_two_ranks_equal_one_process_with_the_same_global_batch(runs):
    one, two = _weights(runs["single"] / "model.pt"), _weights(runs["full"] / "model.pt")
    assert one.keys() == two.keys()
    for k in one:
        # the same math, summed in another order (two half-batch means, gloo's average): equal to
        # float rounding, not bit for bit
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5), (k, (one[k] - two[k]).abs().max())
    np.testing.assert_allclose(_losses(runs["single"]), _losses(runs["full"]), rtol=1e-5)
    meta = torch.load(runs["full"] / "model.pt", weights_only=True)["meta"]
    assert meta["world_size"] == 2 and meta["steps"] == 8
    assert sorted(p.name for p in runs["full"].iterdir()) == ["last.pt", "log.jsonl", "meta.json", "model.pt"]


def test_two_rank_run_resumes_from_its_checkpoint_exactly(runs):
    summaries = [json.loads(line) for line in runs["stdout"].splitlines() if line.startswith("{")]
    assert len(summaries) == 3  # rank 0 alone reports: full, cut, resumed
    assert not summaries[1]["finished"] and summaries[1]["steps"] == 4
    assert summaries[2]["resumed_from"] == 4 and summaries[2]["world_size"] == 2 and summaries[2]["finished"]
    wa, wb = _weights(runs["full"] / "model.pt"), _weights(runs["cut"] / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _losses(runs["full"]) == _losses(runs["cut"])
    ckpt = torch.load(runs["cut"] / "last.pt", weights_only=True)
    assert len(ckpt["rank_states"]) == 2


def test_torchrun_cli_pretrain_two_ranks(tmp_path: Path):
    """``torchrun -m pipeline_src pretrain`` with a real method: completes, one set of outputs,
    the loss goes down."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = deep_merge(yaml.safe_load((REPO / "config/config.yaml").read_text()),
                     yaml.safe_load((REPO / "config/ci.yaml").read_text()))
    cfg["domains"]["chemistry"]["pretrain"].update(steps=30, batch_size=16, lr=3e-3, warmup_steps=3, checkpoint_every=10)
    cfg["domains"]["chemistry"]["model"].update(max_len=40)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    corpus = toy_corpus(160, min_len=8, max_len=40)
    proc = tmp_path / "processed" / "moses"
    proc.mkdir(parents=True)
    tokens = [corpus.tokens[corpus.offsets[i]:corpus.offsets[i + 1]].tolist() for i in range(len(corpus))]
    pq.write_table(pa.table({"id": pa.array(corpus.ids.tolist()), "tokens": pa.array(tokens, type=pa.list_(pa.uint8()))}),
                   proc / "table.parquet")
    out = tmp_path / "ckpt"
    r = _torchrun(["-m", "pipeline_src", "pretrain", "--config", "cfg.yaml", "--corpus", "moses", "--method", "random",
                   "--processed", "processed/moses", "--out", "ckpt", "--threads", "1"], cwd=tmp_path)
    summaries = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["finished"] and summaries[0]["world_size"] == 2
    losses = _losses(out)
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    from pipeline_src.train.loop import load_pretrained

    method, meta = load_pretrained(out / "model.pt")
    assert meta["method"] == "random" and meta["world_size"] == 2 and "module." not in "".join(method.state_dict())


if __name__ == "__main__":
    from pipeline_src.train import distributed

    ctx, _ = distributed.setup("cpu")
    try:
        full, cut, n_steps, stop = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        for out_dir, stop_after in [(full, None), (cut, stop), (cut, None)]:
            summary = det_run(out_dir, n_steps, stop_after=stop_after)
            if stop_after is not None:
                assert not (out_dir / "model.pt").exists() and (out_dir / "last.pt").exists()
            if ctx is None or ctx.is_main:
                print(json.dumps(summary), flush=True)
    finally:
        distributed.cleanup()
