"""Fused self-attention over fields (mtl_final/nn/fused_attention.py, field_attention_* in
cpu_kernels.c): the same outputs, attention and gradients as the PyTorch path of
MultiHeadSelfAttention in float64, for every shape class the lane layout treats differently."""
from __future__ import annotations


import pytest
import torch

from mtl_final import kernels
from mtl_final.nn.fused_attention import field_attention
from mtl_final.nn.self_attention import MultiHeadSelfAttention


pytestmark = pytest.mark.usefixtures("native_kernels")


def _layer(input_dim, attention_dim, heads, use_residual, use_scale, seed=0):
    torch.manual_seed(seed)
    return MultiHeadSelfAttention(input_dim, attention_dim, heads, use_residual=use_residual, use_scale=use_scale)


def _forward_backward(layer, x, grad):
    x = x.clone().requires_grad_()
    out, attention = layer(x, return_attention=True)
    out.backward(grad)
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    return out, attention, x.grad, grads


def _close(actual, expected):
    """float32 result against a float64 reference: within a few float32 roundings of its scale."""
    scale = expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=2e-5 * scale)


# batch 37 = 2 full chunks of 16 lanes + 5; batch 5 < one chunk; F = 1 (softmax of one score);
# head widths not a multiple of anything; 39 fields as Criteo.
@pytest.mark.parametrize(
    "batch, fields, input_dim, attention_dim, heads, use_residual, use_scale",
    [(37, 10, 10, 40, 2, True, False), (5, 3, 5, 7, 1, False, True), (16, 1, 4, 3, 3, True, True),
     (21, 39, 16, 17, 2, True, False)],
)
def test_fused_attention_matches_float64_modules(batch, fields, input_dim, attention_dim, heads, use_residual,
                                                 use_scale):
    layer = _layer(input_dim, attention_dim, heads, use_residual, use_scale)
    x = 2 * torch.randn(batch, fields, input_dim)
    grad = torch.randn(batch, fields, heads * attention_dim)
    out, attention, dx, grads = _forward_backward(layer, x, grad)
    assert type(out.grad_fn).__name__ == "_FieldAttentionBackward"  # the fused op ran
    ref_out, ref_attention, ref_dx, ref_grads = _forward_backward(layer.double(), x.double(), grad.double())
    assert ref_out.grad_fn is not None and type(ref_out.grad_fn).__name__ != "_FieldAttentionBackward"
    _close(out, ref_out)
    _close(attention, ref_attention)
    torch.testing.assert_close(attention.sum(-1), torch.ones(batch, heads, fields), rtol=0, atol=1e-6)
    _close(dx, ref_dx)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        _close(grads[name], ref_grads[name])
    assert (out >= 0).all() and (out == 0).any()  # the ReLU clipped some outputs, whose gradients are 0


def _reference_core(q, k, v, residual, heads, scale):
    """The PyTorch path's attention core (float64 in, float64 out)."""
    b, f, width = q.shape
    q, k, v = (t.view(b, f, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    attention = (scale * (q @ k.transpose(-1, -2))).softmax(-1)
    return torch.relu((attention @ v).transpose(1, 2).flatten(2) + residual), attention


def test_fused_attention_extreme_scores_stay_finite_and_exact():
    """Integer q, k make every score exact in float32 (up to ±180 here), so what is left is the
    softmax: its shift keeps exp finite with scores far apart, weights below e^-87 of a row's largest
    are exactly 0, and the rest match float64 to float32 rounding."""
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randint(-6, 7, (21, 8, 10), generator=gen).float() for _ in range(2))
    v, residual = torch.randn(21, 8, 10, generator=gen), torch.randn(21, 8, 10, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, residual)]
    out, attention = field_attention(*leaves, 2, 1.0)
    grad = torch.randn(21, 8, 10, generator=gen)
    out.backward(grad)
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v, residual)]
    ref_out, ref_attention = _reference_core(*ref_leaves, 2, 1.0)
    ref_out.backward(grad.double())
    assert torch.isfinite(out).all() and (attention == 0).any()
    assert ((ref_attention < 1e-38) == (attention == 0)).all()
    _close(attention, ref_attention)
    _close(out, ref_out)
    for leaf, ref in zip(leaves, ref_leaves):
        assert torch.isfinite(leaf.grad).all()
        _close(leaf.grad, ref.grad)


def test_fused_attention_softmax_weights_to_float32_rounding():
    """Two scores 0 and x per row give weights 1 / (1 + e^x) and e^x / (1 + e^x): over x in [-80, 80]
    they match float64 to a few float32 ulps (the kernel's own exp, not libm's)."""
    x = torch.linspace(-80.0, 80.0, 4001)
    q = torch.ones(x.numel(), 2, 1)
    k = torch.stack([torch.zeros_like(x), x], dim=1).unsqueeze(-1)
    _, attention = field_attention(q, k, torch.zeros_like(q), None, 1, 1.0)
    xd = x.double()
    expected = torch.stack([torch.sigmoid(-xd), torch.sigmoid(xd)], dim=-1)  # [n, 2]
    for row in range(2):
        torch.testing.assert_close(attention[:, 0, row].double(), expected, rtol=2e-6, atol=1e-30)


def test_fused_attention_independent_of_threads_and_batch_neighbours():
    """Each sample's sums run in a fixed order in its own lane: the same bits with 1 or 2 threads,
    and for a sample whether it shares its chunk of 16 lanes with others or sits alone."""
    layer = _layer(10, 40, 2, True, False)
    x = torch.randn(40, 10, 10)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _forward_backward(layer, x, torch.ones(40, 10, 80))
        torch.set_num_threads(2)
        two = _forward_backward(layer, x, torch.ones(40, 10, 80))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one[:3], two[:3]):
        assert torch.equal(a, b)
    with torch.no_grad():
        whole, whole_attention = layer(x, return_attention=True)
        part, part_attention = layer(x[17:20], return_attention=True)
    assert torch.equal(whole[17:20], part) and torch.equal(whole_attention[17:20], part_attention)


def test_fused_attention_evaluation_equals_training_forward_and_torch_mode_uses_modules():
    layer = _layer(4, 6, 2, True, True)
    x = torch.randn(19, 5, 4)
    train_out = layer(x)
    with torch.no_grad():
        eval_out = layer(x)
    assert torch.equal(train_out.detach(), eval_out)
    kernels.use_kernels("torch")
    torch_out = layer(x)
    assert type(torch_out.grad_fn).__name__ != "_FieldAttentionBackward"
    torch.testing.assert_close(torch_out, train_out, rtol=0, atol=1e-5)
