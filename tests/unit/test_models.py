"""Encoders and decoders: shapes, the first-layer hook, and no information flow from masked tokens."""
from __future__ import annotations


import pytest
import torch

from pipeline_src.batch import Batch, InputSpec
from pipeline_src.models import PerceiverEncoder, TransformerEncoder, build_encoder
from pipeline_src.models.decoders import TransformerDecoder, UpsampleDecoder
from pipeline_src.methods.masking import num_masked, random_mask


N = 24
CFG = {"dim": 32, "depth": 3, "heads": 4, "mlp_ratio": 2, "max_len": N, "num_latents": 8,
       "decoder_dim": 16, "decoder_heads": 2}


def _batch(kind: str, b: int = 5, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, N + 1, (b,), generator=g)
    pad = torch.arange(N)[None, :] >= lengths[:, None]
    if kind == "discrete":
        x = torch.randint(1, 257, (b, N), generator=g).masked_fill(pad, 0)
    else:
        x = torch.randn(b, N, 1, generator=g).masked_fill(pad[..., None], 0.0)
    return Batch(x, pad)


def _spec(kind: str) -> InputSpec:
    return InputSpec(kind, N)


@pytest.mark.parametrize("arch", ["transformer", "perceiver"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_encode_shapes_and_pool(arch: str, kind: str) -> None:
    enc = build_encoder(_spec(kind), {**CFG, "arch": arch}).eval()
    batch = _batch(kind)
    h, pad = enc.encode(batch)
    want_len = N if arch == "transformer" else CFG["num_latents"]
    assert h.shape == (5, want_len, CFG["dim"])
    assert enc.pool(h, pad).shape == (5, CFG["dim"])
    logits = enc.first_layer_logits(enc.embed(batch), batch.padding_mask)
    assert logits.shape == (5, CFG["heads"], enc.num_queries(N), N)
    assert torch.isinf(logits.masked_select(batch.padding_mask[:, None, None, :])).all()


def test_build_encoder_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError, match="arch"):
        build_encoder(_spec("discrete"), {**CFG, "arch": "rnn"})
    assert isinstance(build_encoder(_spec("discrete"), {**CFG, "arch": "perceiver"}), PerceiverEncoder)


def _mask(batch: Batch, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = num_masked(batch.n_valid, 0.4)
    return random_mask(torch.rand(batch.padding_mask.shape, generator=g), batch.padding_mask, k)


@pytest.mark.parametrize("arch", ["transformer", "perceiver"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_no_information_flow_from_masked_tokens(arch: str, kind: str) -> None:
    enc = build_encoder(_spec(kind), {**CFG, "arch": arch})
    batch = _batch(kind)
    mask = _mask(batch)
    hidden = mask | batch.padding_mask
    g = torch.Generator().manual_seed(7)
    if kind == "discrete":
        other = torch.randint(1, 257, batch.x.shape, generator=g)
        x2 = torch.where(hidden, other, batch.x)
    else:
        x2 = torch.where(hidden[..., None], 100 * torch.randn(batch.x.shape, generator=g), batch.x)
    assert not torch.equal(x2, batch.x)
    h1, _ = enc.encode(batch, mask)
    h2, _ = enc.encode(Batch(x2, batch.padding_mask), mask)
    torch.testing.assert_close(h1, h2, rtol=0, atol=1e-6)
    # and the gradient w.r.t. hidden token embeddings is exactly zero
    x_emb = enc.embed(batch).detach().requires_grad_(True)
    enc.encode_embedded(x_emb, batch.padding_mask, mask).h.sum().backward()
    assert x_emb.grad[hidden].abs().max() == 0
    assert x_emb.grad[~hidden].abs().max() > 0


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_early_drop_equals_eq5_masked_first_layer(kind: str) -> None:
    torch.manual_seed(0)
    fast = TransformerEncoder(_spec(kind), 32, 3, 4, 2, early_drop=True)
    slow = TransformerEncoder(_spec(kind), 32, 3, 4, 2, early_drop=False)
    slow.load_state_dict(fast.state_dict())
    batch = _batch(kind)
    mask = _mask(batch)
    a, pa = fast.encode(batch, mask)
    b, pb = slow.encode(batch, mask)
    assert torch.equal(pa, pb)
    torch.testing.assert_close(a[~pa], b[~pb], rtol=1e-5, atol=1e-5)  # real (visible) rows
    assert (~pa).sum(1).tolist() == (~(mask | batch.padding_mask)).sum(1).tolist()


def test_first_layer_logits_rows_match_full() -> None:
    for arch in ["transformer", "perceiver"]:
        enc = build_encoder(_spec("discrete"), {**CFG, "arch": arch})
        batch = _batch("discrete")
        x_emb = enc.embed(batch)
        full = enc.first_layer_logits(x_emb, batch.padding_mask)
        idx = torch.tensor([[0, 3], [1, 2], [2, 0], [3, 1], [0, 0]])
        rows = enc.first_layer_logits(x_emb, batch.padding_mask, idx)
        want = torch.gather(full, 2, idx[:, None, :, None].expand(-1, full.shape[1], -1, N))
        torch.testing.assert_close(rows, want)


@pytest.mark.parametrize("decoder_cls", [UpsampleDecoder, TransformerDecoder])
def test_decoders_shapes(decoder_cls: type) -> None:
    spec = _spec("discrete")
    kwargs = {"depth": 2} if decoder_cls is TransformerDecoder else {}
    dec = decoder_cls(spec, 32, 16, 2, **kwargs)
    pos = torch.randn(3, 7, 32)
    h = torch.randn(3, 5, 32)
    h_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    out = dec(pos, h, h_pad, torch.zeros(3, 7, dtype=torch.bool))
    assert out.shape == (3, 7, 257)
    cont = decoder_cls(InputSpec("continuous", N, d_raw=3), 32, 16, 2, **kwargs)
    assert cont(pos, h, None).shape == (3, 7, 3)


# --- dropout (model.dropout) ----------------------------------------------------------------

def _method_loss(name: str, arch: str, p: float, train: bool, seed: int = 0) -> torch.Tensor:
    from pipeline_src.methods import build_method

    torch.manual_seed(0)
    m = build_method(name, _spec("discrete"), {**CFG, "arch": arch, "dropout": p}, {})
    m.train(train)
    torch.manual_seed(seed)                                      # dropout draws from the global RNG
    return m(_batch("discrete"), torch.Generator().manual_seed(3)).loss.detach()


@pytest.mark.parametrize("arch", ["transformer", "perceiver"])
def test_dropout_acts_in_training_mode_only(arch: str) -> None:
    enc = build_encoder(_spec("discrete"), {**CFG, "arch": arch, "dropout": 0.3})
    batch = _batch("discrete")
    enc.eval()
    e1, e2 = enc.encode(batch).h, enc.encode(batch).h
    assert torch.equal(e1, e2)
    enc.train()
    t1, t2 = enc.encode(batch).h, enc.encode(batch).h
    assert not torch.equal(t1, e1) and not torch.equal(t1, t2)
    for name in ["random", "metamae"]:                               # encoder + decoders
        assert not torch.equal(_method_loss(name, arch, 0.3, True), _method_loss(name, arch, 0.3, False))
        assert torch.equal(_method_loss(name, arch, 0.3, True, 5), _method_loss(name, arch, 0.3, True, 5))
    for dec in [UpsampleDecoder(_spec("discrete"), 32, 16, 2, dropout=0.3),
                TransformerDecoder(_spec("discrete"), 32, 16, 2, depth=2, dropout=0.3)]:
        pos, h = torch.randn(3, 7, 32), torch.randn(3, 5, 32)
        assert not torch.equal(dec.train()(pos, h, None), dec.eval()(pos, h, None))


@pytest.mark.parametrize("arch", ["transformer", "perceiver"])
def test_dropout_zero_is_the_plain_model(arch: str) -> None:
    """p = 0: no random draw, train mode = eval mode bit for bit, and the parameters (names and
    shapes) of a model with dropout, so checkpoints load either way."""
    from pipeline_src.methods import build_method

    batch = _batch("discrete")
    for name in ["random", "sma", "metamae"]:
        torch.manual_seed(0)
        plain = build_method(name, _spec("discrete"), {**CFG, "arch": arch}, {})
        torch.manual_seed(0)
        zero = build_method(name, _spec("discrete"), {**CFG, "arch": arch, "dropout": 0.0}, {})
        torch.manual_seed(0)
        with_p = build_method(name, _spec("discrete"), {**CFG, "arch": arch, "dropout": 0.2}, {})
        shapes = {k: v.shape for k, v in plain.state_dict().items()}
        assert shapes == {k: v.shape for k, v in with_p.state_dict().items()}
        with_p.load_state_dict(zero.state_dict(), strict=True)
        assert any(k.endswith("mlp.2.weight") for k in shapes)       # FeedForward keeps its layout
        rng = torch.get_rng_state()
        out = zero.train()(batch, torch.Generator().manual_seed(3)).loss
        assert torch.equal(torch.get_rng_state(), rng)              # p = 0 draws nothing
        assert torch.equal(out, plain.train()(batch, torch.Generator().manual_seed(3)).loss)
        if name != "metamae":                                       # (its projector has BatchNorm)
            assert torch.equal(out, zero.eval()(batch, torch.Generator().manual_seed(3)).loss)
    enc = build_encoder(_spec("continuous"), {**CFG, "arch": arch, "dropout": 0.0})
    cont = _batch("continuous")
    assert torch.equal(enc.train().encode(cont).h, enc.eval().encode(cont).h)


def test_dropout_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="model.dropout"):
        build_encoder(_spec("discrete"), {**CFG, "arch": "transformer", "dropout": 1.5})


def test_decoder_dropout_overrides_the_model_dropout() -> None:
    """``decoder_dropout`` (MetaMAE Table 7: P_drop = 0 in the decoder): the decoders of a model
    with encoder dropout 0.3 and decoder dropout 0 run the same in train and eval mode."""
    from pipeline_src.methods import build_method
    from pipeline_src.models.encoders import decoder_dropout

    assert decoder_dropout({"dropout": 0.3}) == 0.3 and decoder_dropout({"dropout": 0.3, "decoder_dropout": 0.0}) == 0.0
    with pytest.raises(ValueError, match="model.dropout"):
        decoder_dropout({"decoder_dropout": 2.0})
    m = build_method("random", _spec("discrete"), {**CFG, "arch": "transformer", "dropout": 0.3, "decoder_dropout": 0.0}, {})
    pos, h = torch.randn(3, 7, 32), torch.randn(3, 5, 32)
    assert torch.equal(m.decoder.train()(pos, h, None), m.decoder.eval()(pos, h, None))
    enc = m.encoder
    batch = _batch("discrete")
    assert not torch.equal(enc.train().encode(batch).h, enc.eval().encode(batch).h)  # the encoder keeps 0.3


# --- positional table (model.pos_embedding) -------------------------------------------------

def test_sincos_table_hand_computed() -> None:
    """dim 4: h = 2, w = (1, 1/100); row p = [sin p, sin(p/100), cos p, cos(p/100)]."""
    from pipeline_src.models.embeddings import sincos_table

    t = sincos_table(3, 4)
    assert t.shape == (3, 4) and t.dtype == torch.get_default_dtype()
    want = torch.tensor([[0.0, 0.0, 1.0, 1.0],
                         [0.8414709848, 0.0099998333, 0.5403023059, 0.9999500004],
                         [0.9092974268, 0.0199986667, -0.4161468365, 0.9998000067]])
    torch.testing.assert_close(t, want, rtol=0, atol=1e-7)
    big = sincos_table(50, 8)
    assert big.shape == (50, 8)
    torch.testing.assert_close(big[:, :4] ** 2 + big[:, 4:] ** 2, torch.ones(50, 4))  # sin^2 + cos^2 per frequency
    assert torch.equal(sincos_table(50, 8)[:3], sincos_table(3, 8))                   # rows do not depend on n
    with pytest.raises(ValueError, match="even model dim"):
        sincos_table(5, 7)


@pytest.mark.parametrize("arch", ["transformer", "perceiver"])
def test_sincos_table_is_a_fixed_buffer(arch: str) -> None:
    from pipeline_src.models.embeddings import sincos_table

    enc = build_encoder(_spec("discrete"), {**CFG, "arch": arch, "pos_embedding": "sincos"})
    names = dict(enc.named_parameters())
    assert "embedding.pos" not in names and "embedding.pos" in enc.state_dict()   # saved, not trained
    assert torch.equal(enc.embedding.pos, sincos_table(N, CFG["dim"]))
    opt = torch.optim.SGD(enc.parameters(), lr=1.0)
    enc.encode(_batch("discrete")).h.square().sum().backward()
    opt.step()
    assert torch.equal(enc.embedding.pos, sincos_table(N, CFG["dim"]))
    learned = build_encoder(_spec("discrete"), {**CFG, "arch": arch})
    assert "embedding.pos" in dict(learned.named_parameters())
    assert set(learned.state_dict()) == set(enc.state_dict())                     # same keys either way
    with pytest.raises(ValueError, match="pos_embedding 'rope'"):
        build_encoder(_spec("discrete"), {**CFG, "arch": arch, "pos_embedding": "rope"})


def test_learned_is_the_default_bit_for_bit() -> None:
    """``pos_embedding: learned`` written out builds the model that leaving it out builds."""
    batch = _batch("continuous")
    for arch in ["transformer", "perceiver"]:
        torch.manual_seed(0)
        plain = build_encoder(_spec("continuous"), {**CFG, "arch": arch})
        torch.manual_seed(0)
        named = build_encoder(_spec("continuous"), {**CFG, "arch": arch, "pos_embedding": "learned"})
        a, b = plain.state_dict(), named.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(plain.encode(batch).h, named.encode(batch).h)
