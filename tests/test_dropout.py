"""The CPU dropout: drop rate, inverted scaling, gradient mask, eval identity, determinism."""
from __future__ import annotations

import pytest
import torch

from mtl_final.nn.dropout import Dropout, ReLUDropout, keep_multiplier, keep_scale


def test_drop_rate_and_scaling():
    torch.manual_seed(0)
    layer = Dropout(0.2)
    x = torch.ones(1000, 500)
    y = layer(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.8, abs=0.003)
    keep = 1 - round(0.2 * 32768) / 32768
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / keep))


def test_mask_bits_are_uniform():
    # all four 15-bit lanes of each 64-bit draw must be usable: with p=0.5 every lane keeps ~half
    torch.manual_seed(1)
    mult = keep_multiplier(torch.Size([4000, 4]), 0.5, torch.device("cpu"), torch.float32)
    assert torch.allclose((mult != 0).float().mean(0), torch.full((4,), 0.5), atol=0.03)


def test_mask_is_pinned_to_the_draws():
    # The draw → mask mapping is part of reproducibility: committed benchmark results were made
    # with it. Element i is kept iff 15-bit lane i of the int64 draws is >= round(p·32768).
    p, shape = 0.3, torch.Size([5, 7])
    torch.manual_seed(4)
    words = torch.empty(9, dtype=torch.int64).random_()  # ceil(35 / 4) draws
    lanes = [(int(w) >> (16 * k)) & 0x7FFF for w in words.tolist() for k in range(4)][:35]
    threshold = round(p * 32768)
    assert threshold == 9830 and keep_scale(p) == 1 / (1 - 9830 / 32768)
    expected = torch.tensor([keep_scale(p) if v >= threshold else 0.0 for v in lanes], dtype=torch.float64)
    torch.manual_seed(4)
    mult = keep_multiplier(shape, p, torch.device("cpu"), torch.float64)
    assert torch.equal(mult, expected.view(shape))
    torch.manual_seed(4)
    x = torch.linspace(-1, 1, 35, dtype=torch.float64).view(shape)
    assert torch.equal(ReLUDropout(p).train()(x.clone()), x.relu() * expected.view(shape))


def test_gradient_uses_the_same_mask():
    torch.manual_seed(2)
    layer = Dropout(0.3)
    x = torch.randn(64, 32, requires_grad=True)
    y = layer(x)
    (y * 3).sum().backward()
    kept = y != 0
    scale = 1 / (1 - round(0.3 * 32768) / 32768)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 3 * scale))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))


def test_eval_identity_seeded_determinism_and_bad_p():
    layer = Dropout(0.5).eval()
    x = torch.randn(8, 8)
    assert layer(x) is x
    layer.train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(a, layer(x))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_fused_relu_dropout_equals_relu_then_dropout_values_and_gradients():
    # Same seed → same draws: the fused module must reproduce ReLU(inplace) → Dropout bit for bit,
    # in the forward pass and in the gradient (zero where ReLU cut or the mask dropped).
    x0 = torch.randn(300, 70, dtype=torch.float64)
    outs, grads = [], []
    for fused in (False, True):
        x = x0.clone().requires_grad_(True)
        h = x * 1.0  # a non-leaf, as after BatchNorm
        torch.manual_seed(5)
        y = ReLUDropout(0.3)(h) if fused else Dropout(0.3)(torch.relu(h))
        (y * torch.arange(70, dtype=torch.float64)).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    assert (outs[1] == 0).double().mean().item() == pytest.approx(1 - 0.7 * 0.5, abs=0.02)


def test_fused_relu_dropout_eval_is_relu_and_dense_stack_uses_it():
    from mtl_final.nn.mlp import MLPBlock

    layer = ReLUDropout(0.5).eval()
    x = torch.tensor([[-1.0, 2.0]])
    assert torch.equal(layer(x), torch.tensor([[0.0, 2.0]]))
    kinds = [type(m).__name__ for m in MLPBlock(4, [3], dropout=0.1).layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLUDropout"]
    kinds = [type(m).__name__ for m in MLPBlock(4, [3], activation="tanh", dropout=0.1).layers]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Dropout"]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ReLUDropout(-0.1)
