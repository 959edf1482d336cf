"""The CPU dropout: drop rate, inverted scaling, gradient mask, eval identity, determinism."""
from __future__ import annotations

import pytest
import torch

from mtl_final.nn.dropout import Dropout, keep_mask


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
    mask = keep_mask(torch.Size([4000, 4]), 0.5, torch.device("cpu"))
    assert torch.allclose(mask.float().mean(0), torch.full((4,), 0.5), atol=0.03)


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
