"""Cross networks, field self-attention and SAM layers against naive references; the crossnet,
crossnetv2, dcn, dcnv2, autoint and sam models train one step."""
from __future__ import annotations

import math

import pytest
import torch

from mtl_final.config import ConfigError
from mtl_final.models import build_model
from mtl_final.nn.cross import CrossNet, CrossNetV2
from mtl_final.nn.self_attention import MultiHeadSelfAttention, SAMInteraction
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features

B, D, L = 3, 4, 3


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (incl. biases that start at zero) for the references."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def x0_input(seed: int = 1, shape=(B, D)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- cross networks -----------------------------------------------------------------------------


def test_crossnet_matches_per_sample_loop():
    net = CrossNet(D, L).double()
    randomize(net)
    x0 = x0_input()
    w = [net.weights[l].weight[0].tolist() for l in range(L)]
    bias = net.bias.tolist()
    for b in range(B):
        x0_b = x0[b].tolist()
        x = list(x0_b)
        for l in range(L):
            s = sum(x[k] * w[l][k] for k in range(D))  # x_lᵀ w_l
            x = [x0_b[k] * s + bias[l][k] + x[k] for k in range(D)]
        torch.testing.assert_close(net(x0)[b], torch.tensor(x, dtype=torch.float64))
    assert net(x0).shape == (B, D) and net.output_dim == D


def test_crossnetv2_matches_per_sample_loop():
    net = CrossNetV2(D, L).double()
    randomize(net)
    x0 = x0_input()
    for b in range(B):
        x0_b = x0[b].tolist()
        x = list(x0_b)
        for l in range(L):
            W, bias = net.layers[l].weight.tolist(), net.layers[l].bias.tolist()
            wx = [sum(W[k][m] * x[m] for m in range(D)) + bias[k] for k in range(D)]
            x = [x0_b[k] * wx[k] + x[k] for k in range(D)]
        torch.testing.assert_close(net(x0)[b], torch.tensor(x, dtype=torch.float64))


def test_cross_init_xavier_weights_zero_biases():
    torch.manual_seed(0)
    v1, v2 = CrossNet(D, 2), CrossNetV2(D, 2)
    assert torch.all(v1.bias == 0) and all(torch.all(layer.bias == 0) for layer in v2.layers)
    assert all(w.weight.abs().sum() > 0 for w in v1.weights)
    with pytest.raises(ValueError):
        CrossNet(D, 0)


# --- multi-head self-attention --------------------------------------------------------------


@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize("use_residual", [True, False])
@torch.no_grad()
def test_multihead_self_attention_matches_naive_heads(use_scale, use_residual):
    F_, H, dh = 3, 2, 3
    layer = MultiHeadSelfAttention(D, dh, H, use_residual=use_residual, use_scale=use_scale).double()
    randomize(layer)
    x = x0_input(shape=(2, F_, D))
    out, attn = layer(x, return_attention=True)
    assert out.shape == (2, F_, H * dh) and attn.shape == (2, H, F_, F_)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, H, F_, dtype=torch.float64))
    for b in range(2):
        heads = []
        for h in range(H):
            rows = slice(h * dh, (h + 1) * dh)
            q = x[b] @ layer.query.weight[rows].T  # [F, d']
            k = x[b] @ layer.key.weight[rows].T
            v = x[b] @ layer.value.weight[rows].T
            head = torch.zeros(F_, dh, dtype=torch.float64)
            for i in range(F_):
                scores = [float(q[i] @ k[j]) / (math.sqrt(dh) if use_scale else 1.0) for j in range(F_)]
                z = sum(math.exp(s) for s in scores)
                alpha = [math.exp(s) / z for s in scores]
                torch.testing.assert_close(attn[b, h, i], torch.tensor(alpha, dtype=torch.float64))
                head[i] = sum(alpha[j] * v[j] for j in range(F_))
            heads.append(head)
        expected = torch.cat(heads, dim=-1)
        if use_residual:
            expected = expected + x[b] @ layer.residual.weight.T
        torch.testing.assert_close(out[b], expected.clamp_min(0))


# --- SAM ---------------------------------------------------------------------------------------


def sam_reference(layer: SAMInteraction, emb: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-pair loops of the equations in SAMInteraction's docstring."""
    n, F_, Dm = emb.shape
    outs = []
    for b in range(n):
        x = [emb[b, i] for i in range(F_)]
        if layer.pairwise:
            o, p = [], 0
            for i in range(F_):
                for j in range(i + 1, F_):
                    w = layer.pair_weights[0, p]
                    inter = x[i] * x[j] if layer.elementwise else torch.dot(x[i], x[j])
                    o.append(inter * w)
                    p += 1
            outs.append(torch.stack(o))
            continue
        for l in range(layer.num_layers):
            WK = layer.keys[l].weight
            new = []
            for i in range(F_):
                acc = torch.zeros(Dm, dtype=emb.dtype)
                for j in range(F_):
                    kj = WK @ x[j]
                    weight = x[i] * kj if layer.elementwise else torch.dot(x[i], kj)
                    acc = acc + weight * layer.pair_weights[l, i, j]
                if layer.residuals is not None:
                    acc = acc + layer.residuals[l].weight @ x[i]
                new.append(acc)
            x = new
        outs.append(torch.stack(x))
    return torch.stack(outs)


@pytest.mark.parametrize("kind", ["SAM3A", "SAM3E", "SAM2A", "SAM2E"])
@torch.no_grad()
def test_sam_interaction_matches_hand_reference(kind):
    F_, Dm = 3, 2
    layer = SAMInteraction(F_, Dm, kind, num_layers=2, use_residual=True).double()
    randomize(layer, seed=3)
    emb = x0_input(seed=4, shape=(2, F_, Dm))
    out = layer(emb)
    expected_fields = F_ if kind.startswith("SAM3") else F_ * (F_ - 1) // 2
    assert out.shape == (2, expected_fields, Dm) == (2, layer.output_fields, Dm)
    torch.testing.assert_close(out, sam_reference(layer, emb))


def test_sam3a_without_residual_and_init():
    layer = SAMInteraction(3, 2, "SAM3A", num_layers=1, use_residual=False).double()
    assert torch.all(layer.pair_weights == 1) and layer.residuals is None
    emb = x0_input(seed=5, shape=(2, 3, 2))
    torch.testing.assert_close(layer(emb), sam_reference(layer, emb))
    with pytest.raises(ValueError, match="SAM3X"):
        SAMInteraction(3, 2, "SAM3X")


# --- models ------------------------------------------------------------------------------------

MODEL_CASES = [
    ("crossnet",),
    ("crossnetv2",),
    ("dcn",),
    ("dcnv2",),
    ("dcnv2", "model.structure=stacked"),
    ("autoint",),
    ("autoint", "model.use_deep=true"),
    ("sam",),
    ("sam", "model.interaction_type=SAM2E", "model.aggregation=weighted_pooling"),
    ("sam", "model.interaction_type=SAM2A", "model.aggregation=mean_pooling"),
    ("dcn", "block=final"),
]
SMALL = ("block.hidden_units=[8,8]", "model.embedding_dim=4")


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: "-".join(c))
def test_model_trains_one_step(case):
    name, *extra = case
    torch.manual_seed(0)
    model = build_model(make_cfg(f"model={name}", *SMALL, *extra), tiny_features(), tasks("ctr"))
    model.train()
    batch = tiny_batch()
    out = model(batch)
    assert out.logits["ctr"].shape == (len(batch),) and out.probs["ctr"].shape == (len(batch),)
    loss, _ = model.loss(out, batch)
    assert torch.isfinite(loss)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt.zero_grad()
    loss.backward()
    assert model.embedding.table.weight.grad is not None
    assert model.embedding.table.weight.grad.abs().sum() > 0
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "embedding.table.weight" in changed and "head.weight" in changed
    assert len(changed) >= len(before) // 2


def test_dcn_with_final_block_uses_final():
    model = build_model(make_cfg("model=dcn", "block=final", *SMALL), tiny_features(), tasks("ctr"))
    assert type(model.block).__name__ == "FinalBlock"


def test_model_defaults_and_bad_choices():
    assert make_cfg("model=crossnet")["model"]["num_cross_layers"] == 3
    assert make_cfg("model=dcnv2")["model"]["structure"] == "parallel"
    assert make_cfg("model=sam")["model"]["interaction_type"] == "SAM3A"
    assert make_cfg("model=autoint")["model"]["use_deep"] is False
    with pytest.raises(ConfigError, match="structure"):
        make_cfg("model=dcnv2", "model.structure=serial")
    with pytest.raises(ConfigError, match="aggregation"):
        make_cfg("model=sam", "model.aggregation=max_pooling")
