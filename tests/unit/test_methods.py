"""Pretraining methods: registry, mask counts, determinism, MetaMAE second order, the
domain-agnostic property (SMA eq. 1) and that a few hundred steps lower every loss."""
from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch

from pipeline_src.batch import Batch, InputSpec
from pipeline_src.methods import BUILTIN, MaskedAutoencoder, Method, MethodOutput, build_method, select_mask
from pipeline_src.methods import method_class
from pipeline_src.methods import sma as sma_module


N = 24
MODEL = {"arch": "transformer", "dim": 32, "depth": 2, "heads": 4, "mlp_ratio": 2, "max_len": N,
         "num_latents": 8, "decoder_dim": 32, "decoder_heads": 4}
METHOD_CFG = {
    "random": {"mask_ratio": 0.3},
    "sma": {"mask_ratio": 0.3, "num_per_query": 4, "warmup_steps": 0},
    "r2mae": {"ratio_min": 0.15, "ratio_max": 0.6},
    "metamae": {"mask_ratio": 0.5, "support_ratio": 0.2, "inner_lr": 0.1, "contrastive_weight": 0.1,
                "temperature": 0.5, "decoder_depth": 2},
    "span": {"mask_ratio": 0.3, "mean_span": 3},
    "sma_r2": {"ratio_min": 0.15, "ratio_max": 0.6, "num_per_query": 4},
}
TRAINABLE = sorted(METHOD_CFG)
FRAGMENTS = ["C", "CC", "c1ccccc1", "O", "N", "C(=O)", "Cl", "CCO", "C#N", "[nH]", "S(=O)(=O)", "F"]


def smiles_like(count: int, seed: int) -> list[str]:
    """Small structured corpus: SMILES-shaped strings glued from a few fragments."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        parts = [FRAGMENTS[int(i)] for i in torch.randint(0, len(FRAGMENTS), (6,), generator=g)]
        out.append("".join(parts)[:N])
    return out


def encode_strings(strings: list[str]) -> Batch:
    x = torch.zeros(len(strings), N, dtype=torch.long)
    for i, s in enumerate(strings):
        ids = [b + 1 for b in s.encode("utf-8")][:N]
        x[i, : len(ids)] = torch.tensor(ids)
    return Batch(x, x == 0)


def continuous_batch(b: int, seed: int, n: int = 12) -> Batch:
    """HIGGS-like: correlated features, one token each."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 3, generator=g)
    mix = torch.linspace(-1, 1, n * 3).reshape(3, n)
    x = (z @ mix + 0.1 * torch.randn(b, n, generator=g)).unsqueeze(-1)
    return Batch(x, torch.zeros(b, n, dtype=torch.bool))


def spec() -> InputSpec:
    return InputSpec("discrete", N)


def build(name: str, **model_over: object) -> Method:
    return build_method(name, spec(), {**MODEL, **model_over}, METHOD_CFG.get(name, {}))


# --- registry and contract ------------------------------------------------------------------

def test_registry_and_build_errors() -> None:
    assert set(BUILTIN) == {"none", "random", "sma", "r2mae", "metamae", "span", "sma_r2"}
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nope", spec(), MODEL, {})
    with pytest.raises(ValueError, match="unknown config keys"):
        build_method("random", spec(), MODEL, {"mask_rate": 0.3})
    assert [n for n in BUILTIN if not method_class(n).domain_agnostic] == ["span"]
    assert [n for n in BUILTIN if method_class(n).guided_masks] == ["sma", "sma_r2"]
    assert all(method_class(n).name == n for n in BUILTIN)


def test_none_has_fresh_encoder_and_no_step() -> None:
    m = build_method("none", spec(), MODEL, {})
    batch = encode_strings(smiles_like(4, 0))
    h, pad = m.encoder.encode(batch)
    assert m.encoder.pool(h, pad).shape == (4, 32)
    with pytest.raises(RuntimeError):
        m(batch)


@pytest.mark.parametrize("name", TRAINABLE)
def test_forward_contract_and_determinism(name: str) -> None:
    torch.manual_seed(0)
    m = build(name)
    batch = encode_strings(smiles_like(8, 1))
    a = m(batch, torch.Generator().manual_seed(5))
    b = m(batch, torch.Generator().manual_seed(5))
    c = m(batch, torch.Generator().manual_seed(6))
    assert isinstance(a, MethodOutput) and a.loss.dim() == 0 and "mask_ratio" in a.stats
    assert a.loss.item() == b.loss.item() and a.stats == b.stats
    assert a.loss.item() != c.loss.item()


# --- mask counts ----------------------------------------------------------------------------

def _expected(n: int, r: float) -> int:
    return min(max(math.floor(n * r + 0.5), 1), n - 1)


@pytest.mark.parametrize("name,arch", [("random", "transformer"), ("sma", "transformer"), ("sma", "perceiver"),
                                       ("r2mae", "transformer"), ("span", "transformer"),
                                       ("sma_r2", "transformer"), ("sma_r2", "perceiver")])
def test_exact_mask_count_never_padding(name: str, arch: str) -> None:
    m = build(name, arch=arch)
    assert isinstance(m, MaskedAutoencoder)
    g = torch.Generator().manual_seed(0)
    for seed in range(3):
        batch = encode_strings(smiles_like(16, seed))
        ratio = m.sample_ratio(16, g, torch.device("cpu"))
        mask, _ = m.make_mask(batch, m.encoder.embed(batch), ratio, g, step=10)
        assert not (mask & batch.padding_mask).any()
        want = [_expected(int(n), float(r)) for n, r in zip(batch.n_valid, ratio)]
        assert mask.sum(1).tolist() == want


@pytest.mark.parametrize("arch", ["transformer", "perceiver"])
def test_sma_guided_mask_equals_select_mask_on_full_logits(arch: str) -> None:
    m = build("sma", arch=arch)
    batch = encode_strings(smiles_like(16, 3))
    x_emb = m.encoder.embed(batch)
    ratio = m.sample_ratio(16, None, torch.device("cpu"))
    fast = m.guided_mask(batch, x_emb, ratio, torch.Generator().manual_seed(9))
    with torch.no_grad():
        full = m.encoder.first_layer_logits(x_emb, batch.padding_mask)   # [B, H, Q, N]
    qpm = batch.padding_mask if arch == "transformer" else None
    slow = select_mask(full, batch.padding_mask, 0.3, 4, torch.Generator().manual_seed(9), query_padding_mask=qpm)
    assert torch.equal(fast, slow)


def test_sma_warmup_mixes_random_and_guided() -> None:
    m = build_method("sma", spec(), MODEL, {"mask_ratio": 0.3, "num_per_query": 4, "warmup_steps": 100})
    batch = encode_strings(smiles_like(64, 0))
    g = torch.Generator().manual_seed(0)
    assert m(batch, g, step=0).stats["guided_fraction"] == 0.0
    assert 0.2 < m(batch, g, step=50).stats["guided_fraction"] < 0.8
    assert m(batch, g, step=100).stats["guided_fraction"] == 1.0


def test_sma_mixed_warmup_hand_computed() -> None:
    """``warmup_style: mixed`` (SMA's released code): rho(t) = (1 + cos(pi t / T)) / 2 of each mask
    is random, the rest the top guided keys. T = 100, k = 10: rho(0) = 1 -> 10 random; rho(25) =
    (1 + cos(pi/4)) / 2 = 0.8536 -> round(8.536) = 9; rho(50) = 0.5 -> 5; rho(75) = 0.1464 -> 1;
    rho(100) = 0 -> none."""
    k = torch.tensor([10, 10, 0])
    assert [sma_module.random_share(t, 100, k).tolist() for t in (0, 25, 50, 75, 100, 150)] == [
        [10, 10, 0], [9, 9, 0], [5, 5, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]]
    cfg = {"mask_ratio": 0.3, "num_per_query": 4, "warmup_steps": 100, "warmup_style": "mixed"}
    m = build_method("sma", spec(), MODEL, cfg)
    batch = encode_strings(["C" * N] * 4 + smiles_like(4, 3))
    x_emb = m.encoder.embed(batch)
    k = sma_module.num_masked(batch.n_valid, torch.full((8,), 0.3, dtype=torch.float64))
    mask, stats = m.make_mask(batch, x_emb, torch.full((8,), 0.3, dtype=torch.float64), torch.Generator().manual_seed(1), 50)
    assert torch.equal(mask.sum(1), k) and not (mask & batch.padding_mask).any()   # k per sample, valid keys only
    # the guided part is exactly the top (k - round(k / 2)) keys of an SMA mask drawn with the same generator state
    guided = m.guided_mask(batch, x_emb, torch.full((8,), 0.3, dtype=torch.float64), torch.Generator().manual_seed(1),
                           k - sma_module.random_share(50, 100, k))
    assert (mask & guided).sum() == guided.sum()
    assert stats["guided_fraction"] == pytest.approx(float(1 - sma_module.random_share(50, 100, k).sum() / k.sum()))
    with pytest.raises(ValueError, match="warmup_style 'nope'"):
        build_method("sma", spec(), MODEL, {**cfg, "warmup_style": "nope"})


def test_metamae_index_nearby_hand_computed() -> None:
    """``nearby: index`` (MetaMAE's released code): masked tokens at i +- 1 of a visible token i,
    each kept when its noise is below r. Visible 0, 3, 7 of 8 (pad at 7 in the second row):
    candidates 1 (next to 0), 2 and 4 (next to 3), 6 (next to 7); 5 touches no visible token."""
    from pipeline_src.methods.metamae import index_nearby

    visible = torch.tensor([[1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    pad = torch.tensor([[0] * 8, [0] * 7 + [1]], dtype=torch.bool)
    query = ~visible & ~pad
    every = index_nearby(visible, query, torch.zeros(2, 8), 0.5)
    assert every[0].nonzero().flatten().tolist() == [1, 2, 4, 6]
    assert every[1].nonzero().flatten().tolist() == [1, 2, 4]                # 7 is padding, so 6 has no visible neighbour
    noise = torch.tensor([[0.9, 0.1, 0.7, 0.0, 0.2, 0.0, 0.6, 0.0]] * 2)
    assert index_nearby(visible, query, noise, 0.5)[0].nonzero().flatten().tolist() == [1, 4]
    assert not index_nearby(visible, query, torch.zeros(2, 8), 0.0).any()
    m = build_method("metamae", spec(), MODEL, {**METHOD_CFG["metamae"], "nearby": "index"})
    assert m.domain_agnostic is False and build("metamae").domain_agnostic is True
    out = m(encode_strings(smiles_like(8, 1)), torch.Generator().manual_seed(0))
    assert math.isfinite(float(out.loss.detach()))
    with pytest.raises(ValueError, match="nearby 'nope'"):
        build_method("metamae", spec(), MODEL, {**METHOD_CFG["metamae"], "nearby": "nope"})


def test_metamae_projection_heads() -> None:
    """``projection: bn_relu`` (default: Linear, BatchNorm1d, ReLU, Linear; hidden 4 dim, out dim / 2)
    and ``bn`` (Table 7: Linear(256, 1028), BatchNorm1d, Linear(1028, 128), no activation)."""
    from pipeline_src.methods.metamae import projector

    default = build("metamae").projector
    assert [type(x).__name__ for x in default] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (default[0].in_features, default[0].out_features, default[3].out_features) == (32, 128, 16)
    paper = projector(256, "bn", 1028, 128)
    assert [type(x).__name__ for x in paper] == ["Linear", "BatchNorm1d", "Linear"]
    assert (paper[0].out_features, paper[1].num_features, paper[2].in_features, paper[2].out_features) == (1028, 1028, 1028, 128)
    head = projector(4, "bn", 3, 2)
    with torch.no_grad():
        head[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
        head[0].bias.zero_()
        head[2].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
        head[2].bias.zero_()
    x = torch.tensor([[1.0, -2.0, 3.0, 9.0], [3.0, 2.0, 3.0, 9.0]])  # features 0, 1: mean 2, 0; var (biased) 1, 4; feature 2 constant
    # training: normalized with the batch's statistics -> [(x0 - 2) / 1, (x2 - 3) / eps-sized]
    torch.testing.assert_close(head.train()(x), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), rtol=0, atol=1e-4)
    # eval: running statistics after one step (momentum 0.1: mean 0.2, var 0.9 + 0.1 * 2 (unbiased) = 1.1)
    torch.testing.assert_close(head.eval()(x)[:, 0], (torch.tensor([1.0, 3.0]) - 0.2) / (1.1 + 1e-5) ** 0.5)
    relu = projector(4, "bn_relu", 3, 2).train()
    assert (relu[2](relu[1](relu[0](x))) >= 0).all() and relu(x).shape == (2, 2)
    m = build_method("metamae", spec(), MODEL, {**METHOD_CFG["metamae"], "projection": "bn", "projection_dim": 8,
                                                 "projection_hidden": 20})
    assert m.projector[0].out_features == 20 and m.projector[2].out_features == 8
    out = m(encode_strings(smiles_like(8, 1)), torch.Generator().manual_seed(0))
    assert math.isfinite(float(out.loss.detach()))
    with pytest.raises(ValueError, match="projection 'linear'"):
        build_method("metamae", spec(), MODEL, {**METHOD_CFG["metamae"], "projection": "linear"})


def test_metamae_with_sincos_table() -> None:
    """The paper's fixed sine-cosine table: Nearby-S in embedding space still picks the masked
    tokens closest to the visible ones (on that table, the index neighbours), and the run is
    marked as carrying an order prior; ``nearby: index`` stays marked too."""
    from pipeline_src.methods.metamae import nearby_mask
    from pipeline_src.models.embeddings import sincos_table

    m = build("metamae", pos_embedding="sincos")
    assert m.domain_agnostic is False and "encoder.embedding.pos" not in dict(m.named_parameters())
    assert build_method("metamae", spec(), {**MODEL, "pos_embedding": "sincos"},
                        {**METHOD_CFG["metamae"], "nearby": "index"}).domain_agnostic is False
    assert build("random", pos_embedding="sincos").domain_agnostic is False
    visible = torch.zeros(1, 12, dtype=torch.bool)
    visible[0, 5] = True
    near = nearby_mask(sincos_table(12, 32), visible, ~visible, torch.tensor([2]))
    assert near[0].nonzero().flatten().tolist() == [4, 6]
    out = m(encode_strings(smiles_like(8, 1)), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert math.isfinite(float(out.loss.detach())) and m.encoder.embedding.pos.grad is None


def test_default_path_pinned() -> None:
    """Models built without the new keys (pos_embedding, decoder_dropout, projection*) are those of
    before them: state_dict names and the first loss of a fixed seed, recorded before the keys."""
    import hashlib

    pinned = {("metamae", "transformer"): (107, "be8c64d7753e", 5.841373920440674),
              ("metamae", "perceiver"): (110, "2aa9514470e7", 5.839524269104004),
              ("random", "transformer"): (54, "b45f80991e58", 5.78347635269165)}
    for (name, arch), (count, key_hash, loss) in pinned.items():
        torch.manual_seed(0)
        m = build_method(name, spec(), {**MODEL, "arch": arch}, METHOD_CFG[name])
        keys = list(m.state_dict())
        assert (len(keys), hashlib.sha256(" ".join(keys).encode()).hexdigest()[:12]) == (count, key_hash)
        out = m(encode_strings(smiles_like(8, 3)), torch.Generator().manual_seed(5))
        assert out.loss.item() == pytest.approx(loss, rel=1e-6, abs=0), (name, arch)


def test_r2mae_ratios_cover_range() -> None:
    m = build("r2mae")
    r = m.sample_ratio(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert r.min() >= 0.15 and r.max() <= 0.6
    assert r.min() < 0.152 and r.max() > 0.598
    hist = torch.histc(r.float(), bins=9, min=0.15, max=0.6)
    assert (hist > 20000 / 9 * 0.85).all()                               # roughly uniform
    batch = encode_strings(["C" * N] * 256)                              # n_valid = 24
    ratio = m.sample_ratio(256, None, torch.device("cpu"))
    mask, _ = m.make_mask(batch, m.encoder.embed(batch), ratio, None, 0)
    counts = set(mask.sum(1).tolist())
    assert min(counts) == _expected(N, 0.15) and max(counts) == _expected(N, 0.6)


# --- MetaMAE is second order ----------------------------------------------------------------

def test_metamae_inner_step_is_second_order() -> None:
    batch = encode_strings(smiles_like(8, 2))
    grads = []
    for first_order in (False, True):
        torch.manual_seed(0)
        m = build_method("metamae", spec(), MODEL, {**METHOD_CFG["metamae"], "first_order": first_order,
                                                       "inner_lr": 1.0})
        out = m(batch, torch.Generator().manual_seed(1))
        out.loss.backward()
        grads.append((out.loss.detach(), torch.cat([p.grad.flatten() for p in m.encoder.parameters()])))
    (l2, g2), (l1, g1) = grads
    assert torch.equal(l2, l1)                                            # same forward
    assert not torch.allclose(g2, g1, rtol=1e-3, atol=1e-7)               # different outer gradient
    assert (g2 - g1).norm() > 1e-4 * g1.norm()


# --- domain-agnostic: SMA eq. 1 -------------------------------------------------------------

def _trajectory(name: str, arch: str, batches: list[Batch], perm: torch.Tensor | None,
                **model_over: object) -> list[float]:
    torch.manual_seed(0)
    m = build(name, arch=arch, **model_over)
    if perm is not None:
        with torch.no_grad():
            m.encoder.embedding.pos.copy_(m.encoder.embedding.pos[perm])
        draw = m.position_noise
        m.position_noise = lambda b, n, g, d: draw(b, n, g, d)[:, perm]  # type: ignore[method-assign]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for step, batch in enumerate(batches):
        if perm is not None:
            batch = Batch(batch.x[:, perm], batch.padding_mask[:, perm])
        out = m(batch, g, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


@pytest.fixture
def float64() -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


CASES = [(n, "transformer") for n in TRAINABLE] + [("sma", "perceiver"), ("metamae", "perceiver")]


@pytest.mark.parametrize("name,arch", CASES)
def test_domain_agnostic_permutation(name: str, arch: str, float64: None) -> None:
    batches = [encode_strings(smiles_like(12, s)) for s in range(4)]
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(42))
    base = _trajectory(name, arch, batches, None)
    permuted = _trajectory(name, arch, batches, perm)
    same = torch.allclose(torch.tensor(base), torch.tensor(permuted), rtol=1e-9, atol=1e-10)
    assert same == method_class(name).domain_agnostic, (name, base, permuted)


def test_sincos_run_permutes_with_its_table(float64: None) -> None:
    """With the fixed sine-cosine table permuted along with the tokens, a MetaMAE run (Nearby-S in
    embedding space) follows the same trajectory: eq. 1 holds formally; the order prior is in the
    table itself, which is why such a run is marked not domain-agnostic."""
    batches = [encode_strings(smiles_like(12, s)) for s in range(3)]
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(42))
    base = _trajectory("metamae", "transformer", batches, None, pos_embedding="sincos")
    permuted = _trajectory("metamae", "transformer", batches, perm, pos_embedding="sincos")
    torch.testing.assert_close(torch.tensor(base), torch.tensor(permuted), rtol=1e-9, atol=1e-10)


# --- mixed precision: guided mask scores in fp32 --------------------------------------------

GUIDED = [("sma", "transformer"), ("sma", "perceiver"), ("sma_r2", "transformer"), ("sma_r2", "perceiver")]


def _bf16(enabled: bool = True) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def _permuted_twin(m: Method, perm: torch.Tensor) -> Method:
    """The same weights with the positional table and the position noise permuted (SMA eq. 1)."""
    twin = copy.deepcopy(m)
    with torch.no_grad():
        twin.encoder.embedding.pos.copy_(m.encoder.embedding.pos[perm])
    draw = twin.position_noise
    twin.position_noise = lambda b, n, g, d: draw(b, n, g, d)[:, perm]  # type: ignore[method-assign]
    return twin


def _masks(m: Method, batch: Batch, seed: int, step: int = 0, autocast: bool = True) -> torch.Tensor:
    assert isinstance(m, MaskedAutoencoder)
    g = torch.Generator().manual_seed(seed)
    with _bf16(autocast):
        ratio = m.sample_ratio(len(batch.x), g, torch.device("cpu"))
        return m.make_mask(batch, m.encoder.embed(batch), ratio, g, step)[0]


@pytest.mark.parametrize("name,arch", GUIDED)
def test_domain_agnostic_masks_under_bf16_autocast(name: str, arch: str) -> None:
    """SMA eq. 1 in bf16 autocast, float32 weights: along a short bf16 training run, the permuted
    input gets the permuted mask at every step. (Two bf16 runs drift apart by rounding, so the
    permuted twin is rebuilt from the same weights at each step: the mask selection is what is
    tested.) With bf16 scores, ties are broken by position and this fails."""
    torch.manual_seed(0)
    m = build(name, arch=arch)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(42))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        batch = encode_strings(smiles_like(12, step))
        base = _masks(m, batch, 100 + step, step)
        permuted = _masks(_permuted_twin(m, perm), Batch(batch.x[:, perm], batch.padding_mask[:, perm]),
                          100 + step, step)
        assert torch.equal(base[:, perm], permuted), (step, int((base[:, perm] != permuted).sum()))
        with _bf16():
            out = m(batch, g, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()


@pytest.mark.parametrize("name,arch", GUIDED)
def test_bf16_masks_equal_fp32_masks_when_scores_are_separated(name: str, arch: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    scores: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = sma_module.rank_mask

    def recording(score: torch.Tensor, excluded: torch.Tensor, k: torch.Tensor, largest: bool = True) -> torch.Tensor:
        scores.append((score, excluded, k))
        return real(score, excluded, k, largest)

    monkeypatch.setattr(sma_module, "rank_mask", recording)
    torch.manual_seed(0)
    m = build(name, arch=arch)
    batch = encode_strings(smiles_like(32, 5))
    fp32 = _masks(m, batch, 3, autocast=False)
    score, excluded, k = scores[-1]
    bf16 = _masks(m, batch, 3)
    assert scores[-1][0].dtype == torch.float32                         # scores in fp32 under autocast
    top = score.masked_fill(excluded, float("-inf")).sort(1, descending=True).values
    kth, after = top.gather(1, (k - 1)[:, None])[:, 0], top.gather(1, k[:, None])[:, 0]
    separated = kth - after > 0.01 * kth                                # the k-th and (k+1)-th keys
    assert int(separated.sum()) >= 8
    assert torch.equal(bf16[separated], fp32[separated])


def test_metamae_nearby_scores_fp32_under_bf16_autocast() -> None:
    """MetaMAE's Nearby-S choice permutes with the tokens under bf16 autocast (no position-broken ties)."""
    from pipeline_src.methods.masking import num_masked, random_mask
    from pipeline_src.methods.metamae import nearby_mask

    g = torch.Generator().manual_seed(0)
    n, b = 64, 16
    pos = torch.randn(n, 32, generator=g) * 0.02                        # the positional table's init scale
    pad = torch.zeros(b, n, dtype=torch.bool)
    mask = random_mask(torch.rand(b, n, generator=g), pad, num_masked(torch.full((b,), n), 0.5))
    count = torch.full((b,), 6)
    perm = torch.randperm(n, generator=g)
    with _bf16():
        base = nearby_mask(pos, ~mask, mask, count)
        permuted = nearby_mask(pos[perm], (~mask)[:, perm], mask[:, perm], count)
    assert torch.equal(base[:, perm], permuted)
    assert torch.equal(base, nearby_mask(pos, ~mask, mask, count))      # = the fp32 choice
    assert base.sum(1).tolist() == [6] * b and not (base & ~mask).any()


# --- guided masks pinned (a fixed seed's masks, recorded before the folded-key logits) -------

PIN_N = 40
PIN_MODEL = {"dim": 32, "depth": 2, "heads": 4, "mlp_ratio": 2, "max_len": PIN_N, "num_latents": 8,
             "decoder_dim": 32, "decoder_heads": 4}
PINNED = {
    ("sma", "transformer"): [[0, 3, 5, 9, 12, 17, 19, 20, 21, 25, 34, 39], [2, 4, 10, 12, 16, 17, 21, 22, 23, 25],
                             [3, 7, 9, 10], [5, 6, 11, 14, 20, 21, 23, 24],
                             [1, 2, 9, 10, 17, 25, 29, 30, 33, 35, 37, 39], [2, 4]],
    ("sma", "perceiver"): [[4, 9, 17, 18, 19, 20, 27, 28, 33, 34, 36, 39], [3, 6, 8, 13, 14, 15, 20, 26, 31, 32],
                           [1, 9, 10, 11], [1, 5, 13, 18, 19, 23, 25, 26],
                           [1, 2, 3, 9, 10, 13, 21, 29, 30, 33, 36, 39], [2, 4]],
    ("sma_r2", "transformer"): [[0, 3, 4, 6, 9, 15, 17, 19, 20, 21, 25, 34, 36, 37, 38, 39],
                                [1, 2, 4, 5, 9, 11, 12, 18], [3, 4, 5, 7, 9],
                                [1, 2, 3, 4, 5, 6, 9, 10, 14, 19, 20, 21], [4, 7, 14, 22, 25, 29, 35, 36, 38, 39], [2, 4]],
    ("sma_r2", "perceiver"): [[3, 4, 9, 13, 16, 18, 19, 20, 24, 25, 26, 27, 33, 34, 36, 39],
                              [3, 6, 10, 11, 13, 14, 20, 31], [1, 2, 3, 9, 10],
                              [1, 2, 9, 10, 13, 14, 16, 17, 21, 22, 24, 25], [3, 9, 10, 14, 18, 20, 25, 27, 33, 36], [2, 3]],
}


@pytest.mark.parametrize("name,arch", sorted(PINNED))
def test_guided_masks_pinned(name: str, arch: str) -> None:
    g = torch.Generator().manual_seed(123)
    pad = torch.arange(PIN_N)[None, :] >= torch.tensor([40, 33, 12, 27, 40, 5])[:, None]
    batch = Batch(torch.randint(1, 257, (6, PIN_N), generator=g).masked_fill(pad, 0), pad)
    torch.manual_seed(0)
    cfg = {"mask_ratio": 0.3, "num_per_query": 4} if name == "sma" else {"num_per_query": 2}
    m = build_method(name, InputSpec("discrete", PIN_N), {**PIN_MODEL, "arch": arch}, cfg)
    mask = _masks(m, batch, 7, autocast=False)
    assert [row.nonzero().flatten().tolist() for row in mask] == PINNED[(name, arch)]


# --- training lowers the loss ----------------------------------------------------------------

@pytest.mark.parametrize("name,arch", [(n, "transformer") for n in TRAINABLE] + [("sma", "perceiver")])
def test_training_lowers_loss(name: str, arch: str) -> None:
    torch.manual_seed(0)
    m = build(name, arch=arch)
    corpus = encode_strings(smiles_like(256, 11))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(150):
        idx = torch.randint(0, 256, (32,), generator=g)
        out = m(Batch(corpus.x[idx], corpus.padding_mask[idx]), g, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (name, first, last)


@pytest.mark.parametrize("name", ["sma", "random", "metamae"])
def test_training_lowers_loss_continuous(name: str) -> None:
    torch.manual_seed(0)
    m = build_method(name, InputSpec("continuous", 12), {**MODEL, "max_len": 12}, METHOD_CFG[name])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(120):
        out = m(continuous_batch(32, step), g, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:5]) / 5


# --- MetaMAE's decoder as its paper and released code build it (decoder: self) ---------------

def test_metamae_self_attention_decoder(float64: None) -> None:
    """``decoder: self`` (Table 7, MAE's decoder): self-attention blocks only, over every position
    holding its visible token's latent or the mask token; second order; domain-agnostic (eq. 1);
    refused with Perceiver latents."""
    from pipeline_src.models.decoders import SelfAttentionDecoder

    cfg = {**METHOD_CFG["metamae"], "decoder": "self", "projection_bias": False}
    torch.manual_seed(0)
    m = build_method("metamae", spec(), MODEL, cfg)
    assert isinstance(m.decoder, SelfAttentionDecoder) and len(m.decoder.blocks) == 2
    assert not any("cross" in k for k in m.decoder.state_dict())
    assert m.projector[0].bias is None and m.projector[3].bias is None
    # each target position holds its visible token's latent row, in position order; -1 = mask token
    visible = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    idx = torch.arange(5).expand(2, 5)
    q_pad = torch.tensor([[False] * 5, [False, False, True, True, True]])
    decode = m._decoding(visible, idx, q_pad)
    slots = []
    m.decoder.forward = lambda pos, z, zp, qp, slot: slots.append(slot) or torch.zeros(2, 5, 257)
    decode(None, None, None, q_pad)
    assert slots[0].tolist() == [[-1, 0, -1, 1, 2], [0, -1, -1, -1, -1]]
    del m.decoder.forward
    # second order through the inner step, as with the cross-attention decoder
    batch = encode_strings(smiles_like(8, 2))
    grads = []
    for first_order in (False, True):
        torch.manual_seed(0)
        mm = build_method("metamae", spec(), MODEL, {**cfg, "first_order": first_order, "inner_lr": 1.0})
        out = mm(batch, torch.Generator().manual_seed(1))
        out.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in mm.encoder.parameters()]))
    assert (grads[0] - grads[1]).norm() > 1e-4 * grads[1].norm()
    # domain-agnostic: a fixed permutation of the tokens, the table and the noise gives the same run
    batches = [encode_strings(smiles_like(12, s)) for s in range(3)]
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(42))
    saved = METHOD_CFG["metamae"]
    METHOD_CFG["metamae"] = cfg
    try:
        base = _trajectory("metamae", "transformer", batches, None)
        permuted = _trajectory("metamae", "transformer", batches, perm)
    finally:
        METHOD_CFG["metamae"] = saved
    torch.testing.assert_close(torch.tensor(base), torch.tensor(permuted), rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="decoder 'self' needs one latent per visible token"):
        build_method("metamae", spec(), {**MODEL, "arch": "perceiver"}, cfg)
    with pytest.raises(ValueError, match="decoder 'mlp' unknown"):
        build_method("metamae", spec(), MODEL, {**cfg, "decoder": "mlp"})
