"""run_pretrain (the CLI's pretrain command) and the loop with real methods from pipeline_src.methods."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline_src.data.encode import Encoded
from pipeline_src.spec import resolve_pretrain
from pipeline_src.train import pretrain as pretrain_cmd
from pipeline_src.train.loop import load_pretrained, pretrain
from test_train_support import toy_corpus

methods = pytest.importorskip("pipeline_src.methods")

MODEL = {"arch": "transformer", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2, "max_len": 24,
         "decoder_dim": 16, "decoder_heads": 2}
TRAIN = {"steps": 6, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 2, "grad_clip": 1.0,
         "checkpoint_every": 3}


def _config() -> dict:
    return {
        "domains": {"chemistry": {"corpus": "moses", "corpus_subsample": 50, "tasks": ["esol"], "model": MODEL,
                                  "pretrain": TRAIN, "methods": {"random": {"mask_ratio": 0.25}}}},
        "methods": {"none": {}, "random": {"mask_ratio": 0.3}},
    }


def _write_processed(d: Path, corpus: Encoded) -> None:
    d.mkdir(parents=True)
    tokens = [corpus.tokens[corpus.offsets[i]:corpus.offsets[i + 1]].tolist() for i in range(len(corpus))]
    table = pa.table({"id": pa.array(corpus.ids.tolist()), "tokens": pa.array(tokens, type=pa.list_(pa.uint8()))})
    pq.write_table(table, d / "table.parquet")


def _job(corpus: str, method: str):
    return resolve_pretrain(_config(), corpus, method)


@pytest.fixture
def processed(tmp_path: Path) -> Path:
    d = tmp_path / "processed" / "moses"
    _write_processed(d, toy_corpus(80))
    return d


def test_run_pretrain_random_then_load_pretrained(processed: Path, tmp_path: Path, capsys):
    out = tmp_path / "ckpt" / "moses" / "random"
    pretrain_cmd.run_pretrain(_job("moses", "random"), str(processed), str(out), seed=0, threads=1)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 6 and summary["finished"]
    assert len((out / "log.jsonl").read_text().splitlines()) == 6
    method, meta = load_pretrained(out / "model.pt")
    assert meta["method"] == "random" and meta["method_cfg"] == {"mask_ratio": 0.25}
    assert meta["corpus_size"] == 50 and meta["steps"] == 6 and meta["spec"]["max_len"] == 24
    saved = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in method.state_dict().items())
    encoder, _ = load_pretrained(out / "model.pt", encoder_only=True)
    assert encoder is not None and not isinstance(encoder, type(method))


def test_run_pretrain_none_writes_seeded_untrained_encoder(processed: Path, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    pretrain_cmd.run_pretrain(_job("moses", "none"), str(processed), str(a), seed=3)
    pretrain_cmd.run_pretrain(_job("moses", "none"), str(processed), str(b), seed=3)
    method, meta = load_pretrained(a / "model.pt")
    assert meta["method"] == "none" and meta["steps"] == 0
    wa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in a.iterdir()) == ["log.jsonl", "meta.json", "model.pt"]
    assert (a / "log.jsonl").read_text() == ""


OWN_MODEL = {"dim": 24, "depth": 2, "heads": 4, "mlp_ratio": 1, "decoder_dim": 8, "decoder_heads": 2,
             "pos_embedding": "sincos", "dropout": 0.1, "decoder_dropout": 0.0}


def test_metamae_checkpoint_with_its_own_model_evaluates(processed: Path, tmp_path: Path, capsys):
    """``model_by_method.metamae``: the checkpoint records the merged model, and the linear
    (features) and finetune paths of evaluation rebuild that encoder, not the domain's."""
    from pipeline_src.evaluate.finetune import finetune
    from pipeline_src.evaluate.run import run_features
    from pipeline_src.models.embeddings import sincos_table
    from pipeline_src.spec import FinetuneSpec

    cfg = _config()
    cfg["methods"]["metamae"] = {"mask_ratio": 0.5, "decoder_depth": 1, "projection": "bn", "projection_dim": 4}
    cfg["domains"]["chemistry"]["model_by_method"] = {"metamae": OWN_MODEL}
    job = resolve_pretrain(cfg, "moses", "metamae")
    assert job.model == {**MODEL, **OWN_MODEL} and resolve_pretrain(cfg, "moses", "none").model == MODEL
    out = tmp_path / "ckpt" / "moses" / "metamae" / "seed0"
    pretrain_cmd.run_pretrain(job, str(processed), str(out), seed=0, threads=1)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["finished"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model_cfg"] == {**MODEL, **OWN_MODEL} and meta["domain_agnostic"] is False  # sincos: an order prior

    feats = tmp_path / "features" / "seed0.npz"
    rows = np.arange(30)
    run_features(str(out / "model.pt"), processed, str(feats), rows, batch_size=16)
    assert np.load(feats)["X"].shape == (30, 24)

    encoder, meta = load_pretrained(out / "model.pt", encoder_only=True)   # as evaluate.run's finetune does
    assert torch.equal(encoder.embedding.pos, sincos_table(24, 24)) and len(encoder.blocks) == 2
    data = pretrain_cmd.load_corpus(processed, fold=None).subset(rows)
    y = np.linspace(0.0, 1.0, 30)
    fold = np.array(["train"] * 20 + ["valid"] * 5 + ["test"] * 5, dtype=object)
    res = finetune(encoder, int(meta["model_cfg"]["dim"]), data, y, fold, "regression", "rmse",
                   FinetuneSpec(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, patience=1),
                   int(meta["max_len"]), 0, "cpu", log=lambda m: None)
    assert np.isfinite(res.test)


def test_resolve_pretrain_rejects_a_task_dataset():
    with pytest.raises(ValueError, match="not its pretraining corpus"):
        _job("esol", "random")


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_real_method_resume_is_bit_identical(tmp_path: Path, kind: str):
    if kind == "discrete":
        corpus, model_cfg = toy_corpus(60), MODEL
    else:
        rng = np.random.default_rng(0)
        corpus = Encoded("continuous", np.array([f"e{i}" for i in range(60)], dtype=object),
                         values=rng.normal(size=(60, 7)).astype(np.float32))
        model_cfg = {**MODEL, "max_len": 7}
    method_cfg = {"mask_ratio": 0.3}

    def run(out: Path, stop_after: int | None = None) -> dict:
        torch.manual_seed(0)
        m = methods.build_method("random", corpus.spec(model_cfg["max_len"]), model_cfg, method_cfg)
        return pretrain(m, corpus, TRAIN, model_cfg["max_len"], out, seed=0, device="cpu", threads=1,
                        model_cfg=model_cfg, method_cfg=method_cfg, stop_after=stop_after, progress=False)

    run(tmp_path / "full")
    assert not run(tmp_path / "cut", stop_after=4)["finished"]
    assert run(tmp_path / "cut")["resumed_from"] == 4
    wa = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_meta_json_records_the_mask_diversity_of_the_final_weights(processed: Path, tmp_path: Path):
    out = tmp_path / "ckpt" / "moses" / "random"
    pretrain_cmd.run_pretrain(_job("moses", "random"), str(processed), str(out), seed=0, threads=1)
    meta = json.loads((out / "meta.json").read_text())
    div = meta["mask_diversity"]
    assert div["unit"] == "token_value" and div["step"] == 6 and div["samples"] == meta["diagnostic"]["heldout_samples"]
    assert div["verdict"] in ("fine", "collapsed") and div["thresholds"]["min_entropy_ratio"] == 0.8
    for side in ("method", "random"):
        d = div[side]
        assert 0.0 <= d["jaccard"] <= 1.0 and 0.0 <= d["identical_share"] <= 1.0
        assert d["mask_ratio"] == pytest.approx(div["method"]["mask_ratio"])   # the reference: same counts
    assert div["entropy_ratio"] == pytest.approx(div["method"]["entropy"] / div["random"]["entropy"])
    # the same record as the function gives on the saved weights (one code path for every method)
    from pipeline_src.train.diversity import mask_diversity
    from pipeline_src.train.pretrain import load_corpus, split_corpus

    method, _ = load_pretrained(out / "model.pt")
    held, _ = split_corpus(load_corpus(processed), _job("moses", "random"), 0)
    again = mask_diversity(method, held, 24, 256, "cpu", step=6)
    assert again == div
    none_out = tmp_path / "ckpt" / "moses" / "none"
    pretrain_cmd.run_pretrain(_job("moses", "none"), str(processed), str(none_out), seed=0)
    assert json.loads((none_out / "meta.json").read_text())["mask_diversity"] is None
