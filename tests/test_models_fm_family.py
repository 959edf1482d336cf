"""LR / FM / AFM / CIN / DeepFM / xDeepFM: layers against naive references, and one training step
per model (DeepFM and xDeepFM also with block=final)."""
from __future__ import annotations

import pytest
import torch

from mtl_final.models import build_model
from mtl_final.nn.afm import AttentionalPairwise
from mtl_final.nn.cin import CompressedInteraction
from mtl_final.nn.final import FinalBlock
from mtl_final.nn.fm import FMInteraction, LogisticRegression
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features


def _emb(b=3, f=4, d=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, f, d, generator=g, dtype=torch.float64)


# --- layers vs naive references ----------------------------------------------------------------


def test_fm_sum_square_trick_equals_naive_pairwise_sum():
    emb = _emb()
    b, f, _ = emb.shape
    naive = torch.zeros(b, dtype=torch.float64)
    for i in range(f):
        for j in range(i + 1, f):
            naive += (emb[:, i] * emb[:, j]).sum(dim=1)
    out = FMInteraction()(emb)
    assert out.shape == (b,)
    assert torch.allclose(out, naive, rtol=0, atol=1e-10)


@pytest.mark.parametrize("exporting", [False, True], ids=["eager", "traced-for-export"])
def test_afm_attention_sums_to_one_and_matches_double_loop(exporting, monkeypatch):
    # while torch.export traces, the score is the plain expression (the chunk loop would fix the batch size)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: exporting)
    torch.manual_seed(0)
    emb = _emb(b=3, f=4, d=5)
    layer = AttentionalPairwise(num_fields=4, embedding_dim=5, attention_dim=3, attention_dropout=0.5).double().eval()
    for p in layer.parameters():  # non-zero bias too
        torch.nn.init.normal_(p)
    out, weights = layer(emb, return_weights=True)
    assert out.shape == (3,) and weights.shape == (3, 6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-12)

    W, bias = layer.attention.weight, layer.attention.bias  # [A, D], [A]
    h, p = layer.score.weight[0], layer.projection.weight[0]  # [A], [D]
    for n in range(emb.shape[0]):
        products, scores = [], []
        for i in range(4):
            for j in range(i + 1, 4):
                prod = emb[n, i] * emb[n, j]
                products.append(prod)
                scores.append(h @ torch.relu(W @ prod + bias))
        a = torch.softmax(torch.stack(scores), dim=0)
        expected = p @ sum(a_ij * prod for a_ij, prod in zip(a, products))
        assert torch.allclose(weights[n], a, rtol=0, atol=1e-10)
        assert torch.allclose(out[n], expected, rtol=0, atol=1e-10)


def test_afm_chunked_attention_gradients_match_autograd_reference(monkeypatch):
    # The fused score recomputes the hidden layer chunk by chunk in backward; 7 pairs x 3 rows = 21
    # rows with 4-row chunks exercises a ragged last chunk. Reference: plain autograd on the layers.
    import mtl_final.nn.afm as afm_module

    monkeypatch.setattr(afm_module, "ATTENTION_CHUNK_ROWS", 4)
    torch.manual_seed(1)
    layer = AttentionalPairwise(num_fields=7, embedding_dim=5, attention_dim=6).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    emb = _emb(b=3, f=7, d=5).requires_grad_(True)
    (layer(emb) * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
    fused = [emb.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    emb.grad = None
    layer.zero_grad()
    products = layer.pair_products(emb)
    scores = layer.score(torch.relu(layer.attention(products))).squeeze(-1)
    pooled = (torch.softmax(scores, dim=1).unsqueeze(-1) * products).sum(dim=1)
    (layer.projection(pooled).squeeze(-1) * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
    reference = [emb.grad] + [p.grad for p in layer.parameters()]
    for got, want in zip(fused, reference):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x, w, b, h: afm_module._AttentionScore.apply(x, w, b, h, 4),
        tuple(torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in ((10, 5), (6, 5), (6,), (6,))),
    )


def test_cin_matches_loop_reference_and_width():
    torch.manual_seed(0)
    x0 = _emb(b=2, f=3, d=4)
    layer = CompressedInteraction(num_fields=3, hidden_units=[5, 2]).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    maps = layer.feature_maps(x0)
    out = layer(x0)
    assert out.shape == (2, 7) and layer.output_dim == 7

    # layer 1 by einsum: X1[b,h,d] = Σ_ij W[h,i,j] X0[b,i,d] X0[b,j,d]
    w1 = layer.layers[0].weight.view(5, 3, 3)
    x1 = torch.einsum("hij,bid,bjd->bhd", w1, x0, x0)
    assert torch.allclose(maps[0], x1, rtol=0, atol=1e-10)

    # layer 2 by explicit loops over (h, i, j), from the reference X1
    w2 = layer.layers[1].weight.view(2, 5, 3)
    x2 = torch.zeros(2, 2, 4, dtype=torch.float64)
    for h in range(2):
        for i in range(5):
            for j in range(3):
                x2[:, h] += w2[h, i, j] * x1[:, i] * x0[:, j]
    assert torch.allclose(maps[1], x2, rtol=0, atol=1e-10)
    assert torch.allclose(out, torch.cat([x1.sum(-1), x2.sum(-1)], dim=1), rtol=0, atol=1e-10)


def test_cin_rejects_empty_layers():
    with pytest.raises(ValueError, match="cin_hidden_units"):
        CompressedInteraction(3, [])


def test_lr_model_equals_bias_plus_picked_weights():
    torch.manual_seed(0)
    features, batch = tiny_features(), tiny_batch(n=6)
    model = build_model(make_cfg("model=lr"), features, tasks("ctr")).double()
    with torch.no_grad():
        torch.nn.init.normal_(model.embedding.table.weight)
        torch.nn.init.normal_(model.embedding.numeric)
        model.bias.fill_(0.7)
    table, numeric = model.embedding.table.weight[:, 0], model.embedding.numeric[:, 0]
    offsets = [0, 6, 6 + 9]  # vocab sizes 6, 9, 4
    expected = []
    for n in range(len(batch)):
        total = 0.7
        for f, off in enumerate(offsets):
            total = total + table[off + batch.cat[n, f]]
        for f in range(2):
            total = total + batch.num[n, f].double() * numeric[f]
        expected.append(total)
    batch.num = batch.num.double()
    logit = model(batch).logits["ctr"]
    assert torch.allclose(logit, torch.stack(expected), rtol=0, atol=1e-10)
    assert model.embedding.dim == 1


def test_first_order_layer_is_bias_plus_sum():
    layer = LogisticRegression(tiny_features())
    batch = tiny_batch(n=4)
    with torch.no_grad():
        layer.bias.fill_(-0.3)
    expected = layer.weights(batch).sum(dim=(1, 2)) - 0.3
    assert torch.allclose(layer(batch), expected)


def test_fm_model_is_first_order_plus_pairwise():
    model = build_model(make_cfg("model=fm", "model.embedding_dim=4"), tiny_features(), tasks("ctr"))
    batch = tiny_batch(n=5)
    expected = model.first_order(batch) + FMInteraction()(model.embedding(batch))
    assert torch.allclose(model(batch).logits["ctr"], expected)


def test_model_defaults_registered():
    assert make_cfg("model=afm")["model"]["attention_dim"] == 10
    assert make_cfg("model=afm")["model"]["attention_dropout"] == 0.0
    assert make_cfg("model=cin")["model"]["cin_hidden_units"] == [16, 16, 16]
    assert make_cfg("model=xdeepfm", "model.cin_hidden_units=[4]")["model"]["cin_hidden_units"] == [4]


# --- every model trains one step ------------------------------------------------------------

SMALL = ("model.embedding_dim=4", "block.hidden_units=[8,8]", "model.embedding_regularizer=0.01")
CASES = [
    ("lr", ()),
    ("fm", ()),
    ("afm", ("model.attention_dim=3", "model.attention_dropout=0.1")),
    ("cin", ("model.cin_hidden_units=[4,3]",)),
    ("deepfm", ()),
    ("xdeepfm", ("model.cin_hidden_units=[4,3]",)),
    ("deepfm", ("block=final",)),
    ("xdeepfm", ("block=final", "model.cin_hidden_units=[4]")),
]


@pytest.mark.parametrize("name,extra", CASES, ids=[f"{n}{'+' + e[0] if e else ''}" for n, e in CASES])
def test_model_trains_one_step(name, extra):
    torch.manual_seed(0)
    cfg = make_cfg(f"model={name}", *SMALL, *extra)
    model = build_model(cfg, tiny_features(), tasks("ctr"))
    if "block=final" in extra:
        assert isinstance(model.block, FinalBlock)
    batch = tiny_batch(n=16)
    model.train()
    out = model(batch)
    assert set(out.logits) == {"ctr"} and out.logits["ctr"].shape == (16,)
    assert out.probs["ctr"].shape == (16,)
    loss, parts = model.loss(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt.zero_grad()
    loss.backward()
    grad = model.embedding.table.weight.grad
    assert grad is not None and grad.abs().sum() > 0, "no gradient reached the embedding"
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert "embedding.table.weight" in changed
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters not connected to the loss: {unused}"
    # With the paper's N(0, 1e-4) embedding init, AFM's attention net sees products of order 1e-8
    # and gets gradients whose Adam step is below float32 resolution: only non-negligible ones count.
    stuck = [n for n, p in model.named_parameters() if p.grad.abs().max() > 1e-6 and n not in changed]
    assert not stuck, stuck
    model.eval()
    with torch.no_grad():
        assert model(batch).logits["ctr"].shape == (16,)
