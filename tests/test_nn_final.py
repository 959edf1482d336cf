"""FINAL layers, blocks, field gate, embedding and the 2B+KD loss against hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.models import build_model
from mtl_final.nn import fast_paths
from mtl_final.nn.blocks import build_block
from mtl_final.nn.embedding import FeatureEmbedding
from mtl_final.nn.field_gate import FieldGate
from mtl_final.nn.final import FactorizedInteraction, FinalBlock
from mtl_final.nn.tower import Tower, self_distillation_loss
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features



@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_n2_concat_identity_equals_reference_by_hand():
    layer = FactorizedInteraction(3, 4, num_steps=2, aggregation="concat")
    W = torch.tensor([[0.2, -0.1, 0.4], [0.3, 0.5, -0.2], [-0.6, 0.1, 0.7], [0.8, -0.3, 0.05]])
    b = torch.tensor([0.1, -0.2, 0.3, -0.4])
    with torch.no_grad():
        layer.linear.weight.copy_(W)
        layer.linear.bias.copy_(b)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    z = x @ W.T + b  # the reference's one linear map, split in halves (h2, h1)
    h2, h1 = z[:, :2], z[:, 2:]
    expected = torch.cat([h2, h1 * h2], dim=1)
    assert torch.allclose(layer(x), expected, atol=1e-12)
    # spelled out for the first sample: [z0, z1, z2*z0, z3*z1]
    zz = [sum(W[j, k].item() * x[0, k].item() for k in range(3)) + b[j].item() for j in range(4)]
    assert layer(x)[0].tolist() == pytest.approx([zz[0], zz[1], zz[2] * zz[0], zz[3] * zz[1]], abs=1e-12)


def test_general_n_sum_and_sigma_follow_equation_1():
    torch.manual_seed(0)
    layer = FactorizedInteraction(5, 3, num_steps=3, aggregation="sum", sigma="tanh")
    x = torch.randn(4, 5)
    z1, z2, z3 = (x @ layer.linear.weight.T + layer.linear.bias).split(3, dim=1)
    h1 = z1
    h2 = h1 * torch.tanh(z2)
    h3 = h2 * torch.tanh(z3)
    assert torch.allclose(layer(x), h1 + h2 + h3, atol=1e-12)
    assert layer.linear.out_features == 9  # "sum": N full-width maps


@pytest.mark.parametrize("num_steps", [2, 3, 4])
def test_fused_concat_steps_match_autograd_reference_in_values_and_gradients(num_steps):
    # The concat / identity-σ layer runs through a hand-written backward; check it against plain
    # autograd on eq. 1 (h_1 = z_1, h_i = h_{i-1} ⊙ z_i, out = [h_1, ..., h_N]).
    torch.manual_seed(num_steps)
    layer = FactorizedInteraction(5, 2 * num_steps, num_steps=num_steps, aggregation="concat")
    x = torch.randn(6, 5, requires_grad=True)
    weights = torch.randn(6, 2 * num_steps)
    (layer(x) * weights).sum().backward()
    fused = [x.grad.clone(), layer.linear.weight.grad.clone(), layer.linear.bias.grad.clone()]

    x.grad = None
    layer.zero_grad()
    zs = (x @ layer.linear.weight.T + layer.linear.bias).split(2, dim=1)
    hs = [zs[0]]
    for z_i in zs[1:]:
        hs.append(hs[-1] * z_i)
    (torch.cat(hs, dim=1) * weights).sum().backward()
    for got, want in zip(fused, [x.grad, layer.linear.weight.grad, layer.linear.bias.grad]):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    z = torch.randn(3, 2 * num_steps, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fast_paths._ConcatSteps.apply(t, num_steps), (z,))
    # Without autograd (evaluation) the steps run in place in the Linear output: same bits.
    with torch.no_grad():
        assert torch.equal(layer(x), torch.cat(hs, dim=1))


@pytest.mark.parametrize("num_steps", [1, 2, 3])
@pytest.mark.parametrize("aggregation", ["concat", "sum"])
@pytest.mark.parametrize("sigma", ["identity", "tanh"])
@pytest.mark.parametrize("grad", ["input", "parameters", "none"])
def test_the_chosen_fast_path_matches_the_plain_forward(num_steps, aggregation, sigma, grad):
    """`forward` takes the fast path nn/fast_paths.py picks (N = 1: the Linear alone; "concat" with
    identity σ: `_ConcatSteps` where autograd records the layer, the steps in place where it does not),
    and it gives the bits of `plain_forward` (eq. 1 step by step) and, under autograd, its gradients.
    grad: what autograd tracks (training: the input; evaluation with autograd on: the parameters only;
    none: evaluation under no_grad)."""
    torch.manual_seed(num_steps)
    layer = FactorizedInteraction(5, 6, num_steps=num_steps, aggregation=aggregation, sigma=sigma)
    x = torch.randn(7, 5, requires_grad=grad == "input")
    if num_steps == 1:
        expected = layer.linear
    elif aggregation == "concat" and sigma == "identity":
        expected = fast_paths.concat_steps_in_place if grad == "none" else fast_paths.concat_steps
    else:
        expected = None
    with torch.set_grad_enabled(grad != "none"):
        chosen = fast_paths.fast_forward(layer, x)
        out, plain = layer(x), layer.plain_forward(x)
    assert getattr(chosen, "func", chosen) is expected
    assert torch.equal(out, plain)
    if grad != "none":
        wrt = [x, *layer.parameters()] if grad == "input" else list(layer.parameters())
        weights = torch.randn(7, 6)
        grads = torch.autograd.grad((out * weights).sum(), wrt)
        plain_grads = torch.autograd.grad((plain * weights).sum(), wrt)
        for got, want in zip(grads, plain_grads):
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_one_step_block_is_an_mlp_and_trains_with_inplace_activation(batch_norm):
    # N = 1 is a Linear; without BatchNorm the in-place ReLU(+dropout) acts on the layer's output
    # directly, which must not be a view autograd forbids modifying.
    from mtl_final.nn.mlp import MLPBlock

    torch.manual_seed(0)
    final = FinalBlock(5, [4, 3], num_steps=1, dropout=0.1, batch_norm=batch_norm).eval()
    mlp = MLPBlock(5, [4, 3], dropout=0.1, batch_norm=batch_norm).eval()
    mlp.load_state_dict({k.replace(".linear", ""): v for k, v in final.state_dict().items()})
    x = torch.randn(6, 5, requires_grad=True)
    assert torch.allclose(final(x), mlp(x), atol=1e-12)
    final.train()
    final(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_concat_needs_divisible_width():
    with pytest.raises(ValueError, match="multiple of 3"):
        FactorizedInteraction(4, 10, num_steps=3, aggregation="concat")


@pytest.mark.parametrize("num_steps,layers", [(2, 1), (2, 2), (3, 2), (2, 3)])
def test_block_degree_grows_as_n_to_the_k(num_steps, layers):
    """Identity σ/activation, no bias, no BN: f(c·x) is a polynomial in c of degree exactly N^K.
    The (N^K + 1)-th finite difference over equally spaced c vanishes; the N^K-th does not."""
    torch.manual_seed(1)
    block = FinalBlock(4, [6] * layers, activation="identity", batch_norm=False, num_steps=num_steps,
                       aggregation="concat" if 6 % num_steps == 0 else "sum", bias=False)
    x = torch.randn(1, 4)
    degree = num_steps**layers
    cs = torch.arange(degree + 2, dtype=torch.float64)
    values = torch.stack([block(c * x).sum() for c in cs])
    diffs = [values]
    for _ in range(degree + 1):
        diffs.append(diffs[-1][1:] - diffs[-1][:-1])
    scale = values.abs().max()
    assert diffs[degree].abs().min().item() > 1e-6 * scale  # degree N^K is reached
    assert diffs[degree + 1].abs().item() < 1e-9 * scale * 2**degree  # and not exceeded


def test_build_block_factory_kinds():
    mlp = build_block("mlp", 8, hidden_units=[5, 3], dropout=0.1, num_steps=2, aggregation="concat")
    final = build_block("final", 8, hidden_units=[6, 4], dropout=0.1)
    assert mlp.output_dim == 3 and final.output_dim == 4
    assert mlp(torch.randn(7, 8)).shape == (7, 3)
    assert final(torch.randn(7, 8)).shape == (7, 4)
    with pytest.raises(ValueError, match="unknown block kind 'cnn'"):
        build_block("cnn", 8, hidden_units=[4])


def test_field_gate_starts_as_identity_copy_and_mixes_fields():
    gate = FieldGate(3)
    emb = torch.randn(2, 3, 4)
    out = gate(emb)
    assert out.shape == (2, 6, 4)
    assert torch.equal(out[:, :3], emb) and torch.allclose(out[:, 3:], emb)  # weight 0, bias 1
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    out = gate(emb)
    expected_gate_0 = emb[:, 1] + 1  # field 0 gated by field 1 (per embedding dim) + bias
    assert torch.allclose(out[:, 3], emb[:, 0] * expected_gate_0)
    assert torch.allclose(out[:, 5], emb[:, 2] * (2 * emb[:, 0] + 1))


def test_feature_embedding_offsets_padding_and_numeric():
    spec = FeatureSpec(categorical=(("a", 4), ("b", 3)), numeric=("x",))
    emb = FeatureEmbedding(spec, 2)
    cat = torch.tensor([[0, 2], [3, 0]])
    num = torch.tensor([[2.0], [-1.0]])
    out = emb(Batch(cat, num))
    table = emb.table.weight
    assert out.shape == (2, 3, 2)
    assert torch.equal(out[0, 0], torch.zeros(2)) and torch.equal(out[1, 1], torch.zeros(2))  # padding rows
    assert torch.equal(out[0, 1], table[4 + 2]) and torch.equal(out[1, 0], table[3])
    assert torch.allclose(out[:, 2], num * emb.numeric[0])
    out.sum().backward()
    assert torch.equal(table.grad[[0, 4]], torch.zeros(2, 2))  # padding rows get no gradient
    assert table.grad[6].abs().sum() > 0
    assert emb.squared_norm().item() == pytest.approx(table.pow(2).sum().item() + emb.numeric.pow(2).sum().item())


@pytest.mark.parametrize("row, column, value", [(1, 0, 4), (0, 1, -1), (1, 1, 99)])
def test_feature_embedding_rejects_a_value_outside_its_field(row, column, value):
    # 4 in field "a" (size 4) would silently read field "b"'s row 0; -1 and 99 would fail deep in torch
    spec = FeatureSpec(categorical=(("a", 4), ("b", 3)), numeric=())
    emb = FeatureEmbedding(spec, 2)
    cat = torch.tensor([[0, 2], [3, 0]])
    cat[row, column] = value
    name, size = spec.categorical[column]
    with torch.no_grad(), pytest.raises(IndexError, match=(
            rf"categorical field '{name}' \(column {column}\): encoded value {value} at batch row {row} is outside "
            rf"its vocabulary \[0, {size}\); encode raw data with the run's encoders")):
        emb.eval()(Batch(cat, torch.zeros(2, 0)))


def test_embedding_init_is_paper_init():
    torch.manual_seed(0)
    emb = FeatureEmbedding(FeatureSpec(categorical=(("a", 20000),), numeric=tuple(f"n{i}" for i in range(2000))), 10)
    assert emb.table.weight[1:].std().item() == pytest.approx(1e-4, rel=0.02)
    assert torch.equal(emb.table.weight[0], torch.zeros(10))
    assert emb.numeric.std().item() == pytest.approx(1e-4, rel=0.02)  # 20,000 draws
    # numeric_init=xavier: FuxiCTR's Linear(1, 10, bias=False), Xavier normal: std sqrt(2 / 11) = 0.4264
    emb.reset_parameters("xavier")
    assert emb.numeric.std().item() == pytest.approx(0.4264, rel=0.01)
    assert emb.numeric.mean().item() == pytest.approx(0.0, abs=0.01)
    assert emb.table.weight[1:].std().item() == pytest.approx(1e-4, rel=0.02)
    with pytest.raises(ValueError, match="numeric_init must be one of"):
        emb.reset_parameters("uniform")


def test_model_numeric_init_reaches_every_embedding_of_the_model():
    features = FeatureSpec(categorical=(("a", 5),), numeric=tuple(f"n{i}" for i in range(500)))
    for name in ("lr", "fm", "mlp"):
        torch.manual_seed(0)
        model = build_model(make_cfg(f"model={name}", "model.numeric_init=xavier", "block.hidden_units=[4]"),
                            features, tasks("ctr"))
        embeddings = [m for m in model.modules() if isinstance(m, FeatureEmbedding)]
        assert embeddings
        for emb in embeddings:  # dim 1 (LR, FM's first order): std 1; dim 10: 0.4264; 500 or 5000 draws
            assert emb.numeric.std().item() == pytest.approx(math.sqrt(2 / (1 + emb.dim)), rel=0.1), name


def test_regularization_is_half_lambda_whole_table_norm():
    cfg = make_cfg("model=mlp", "model.embedding_regularizer=0.1", "block.hidden_units=[4]")
    model = build_model(cfg, tiny_features(), tasks("ctr"))
    expected = 0.05 * (model.embedding.table.weight.pow(2).sum() + model.embedding.numeric.pow(2).sum())
    assert model.regularization().item() == pytest.approx(expected.item(), rel=1e-12)


def test_net_regularization_covers_every_parameter_outside_the_embeddings():
    cfg = make_cfg("model=final", "model.field_gate=true", "block.kind=final", "block.hidden_units=[4]",
                   "model.net_regularizer=0.2")
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(), tasks("ctr"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.embedding.table.weight.numel() + model.embedding.numeric.numel()
    names = {n.split(".")[-1] for n, _ in model.named_parameters()}
    assert {"weight", "bias"} <= names  # BatchNorm's and the field gate's count too, as FuxiCTR's
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    # 0.1 · 0.25 per network parameter; the embedding tables are the embedding regulariser's (λ 0 here)
    assert model.regularization().item() == pytest.approx(0.1 * 0.25 * (total - embedding), rel=1e-6)
    assert len(model.network_parameters()) == len(list(model.parameters())) - 2


def _final_2b(kd: bool):
    cfg = make_cfg("model=final", "model.num_blocks=2", f"model.kd={str(kd).lower()}", "model.field_gate=true",
                   "block.kind=final", "block.hidden_units=[8,8]", "model.block2.hidden_units=[6]", "model.block2.dropout=0")
    torch.manual_seed(0)
    return build_model(cfg, tiny_features(), tasks("ctr"))


def test_final_2b_kd_loss_is_exactly_paper_formula():
    model = _final_2b(kd=True)
    model.train()
    batch = tiny_batch(16)
    batch = Batch(batch.cat, batch.num.double(), {k: v.double() for k, v in batch.labels.items()})
    out = model(batch)
    emb = model.embedding(batch)
    # dropout is 0 in this config, so recomputing in train mode (BN batch statistics) is deterministic
    l1 = model.head1(model.block1(model.field_gate(emb).flatten(1))).squeeze(-1)
    l2 = model.head2(model.block2(emb.flatten(1))).squeeze(-1)
    y_hat = torch.sigmoid((l1 + l2) / 2)
    y = batch.labels["ctr"]
    expected = (F.binary_cross_entropy(y_hat, y) + F.binary_cross_entropy(torch.sigmoid(l1), y_hat.detach())
                + F.binary_cross_entropy(torch.sigmoid(l2), y_hat.detach()))
    loss, parts = model.loss(out, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert set(parts) == {"ctr", "kd", "regularization"}
    model.eval()
    assert model(batch).aux_losses == {}  # no KD at inference


def test_kd_terms_send_no_gradient_into_teacher():
    a = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    b = torch.tensor([1.1, 0.4, -0.7], requires_grad=True)
    teacher = (a + b) / 2
    loss = self_distillation_loss([a, b], teacher)
    grad_a, grad_b = torch.autograd.grad(loss, [a, b])
    # if the teacher were not detached, the gradient would include d/dteacher terms; with stop_grad
    # each block's gradient is exactly that of BCE(logit_k, constant target) = (σ(l_k) − σ(teacher)) / n
    target = torch.sigmoid(teacher.detach())
    assert torch.allclose(grad_a, (torch.sigmoid(a) - target) / 3, atol=1e-12)
    assert torch.allclose(grad_b, (torch.sigmoid(b) - target) / 3, atol=1e-12)


def test_dual_tower_kd_and_average():
    torch.manual_seed(0)
    tower = Tower(5, {"kind": "final", "hidden_units": [4], "dropout": 0.0, "activation": "relu",
                      "batch_norm": False, "dual": True, "kd": True})
    x = torch.randn(6, 5)
    logit, kd = tower(x)
    l1 = tower.heads[0](tower.blocks[0](x)).squeeze(-1)
    l2 = tower.heads[1](tower.blocks[1](x)).squeeze(-1)
    assert torch.allclose(logit, (l1 + l2) / 2)
    assert kd.item() == pytest.approx(self_distillation_loss([l1, l2], logit).item())
    tower.eval()
    assert tower(x)[1] is None


def test_final_1b_and_dual_structure():
    one = build_model(make_cfg("model=final", "block.kind=final", "block.hidden_units=[8]"), tiny_features(), tasks("ctr"))
    assert one.block2 is None and one.field_gate is None
    dual = _final_2b(kd=False)
    dual.train()
    assert dual(tiny_batch()).aux_losses == {}
    with pytest.raises(Exception, match="num_blocks=2"):
        build_model(make_cfg("model=final", "model.kd=true"), tiny_features(), tasks("ctr"))


def test_linear_init_is_xavier_normal_zero_bias():
    torch.manual_seed(0)
    model = build_model(make_cfg("model=mlp", "block.hidden_units=[300]"), FeatureSpec(categorical=(("a", 5),) * 40), tasks("ctr"))
    linear = model.block.layers[0]
    std = math.sqrt(2.0 / (linear.in_features + linear.out_features))
    assert linear.weight.std().item() == pytest.approx(std, rel=0.03)
    assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
