"""gated_sum is the einsum "be,beh->bh" of MMoE / PLE bit for bit: values and both gradients, on
either CPU matmul backend, for gates that mix the same experts (MMoE's gradient accumulation)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from mtl_final.nn import cpu_matmul
from mtl_final.nn.gated_sum import gated_sum


def _einsum(gate: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    return torch.einsum("be,beh->bh", gate, experts)


def _run(mix, shape: tuple[int, int, int], tasks: int, matmul) -> list[torch.Tensor]:
    """Outputs, gate gradients and expert-output gradients of `tasks` gates over stacked experts."""
    batch, num, width = shape
    g = torch.Generator().manual_seed(batch * num + width)
    outs = [torch.randn(batch, width, generator=g).requires_grad_() for _ in range(num)]
    logits = [torch.randn(batch, num, generator=g).requires_grad_() for _ in range(tasks)]
    grads = [torch.randn(batch, width, generator=g) for _ in range(tasks)]
    with matmul():
        experts = torch.stack(outs, dim=1)
        mixed = [mix(torch.softmax(lg, dim=-1), experts) for lg in logits]
        torch.autograd.backward(mixed, grads)
    return [m.detach() for m in mixed] + [lg.grad for lg in logits] + [o.grad for o in outs]


@pytest.mark.parametrize("matmul", [cpu_matmul.scope, contextlib.nullcontext], ids=["selected", "default"])
@pytest.mark.parametrize("shape, tasks", [((2048, 4, 256), 2), ((300, 6, 64), 1), ((7, 3, 5), 3), ((1, 1, 4), 2)])
def test_gated_sum_is_the_einsum_bit_for_bit(shape, tasks, matmul) -> None:
    ours, reference = _run(gated_sum, shape, tasks, matmul), _run(_einsum, shape, tasks, matmul)
    assert len(ours) == 2 * tasks + shape[1]
    for a, b in zip(ours, reference):
        assert a.shape == b.shape and torch.equal(a, b)


def test_gated_sum_without_autograd_and_expert_gradient_layout() -> None:
    g = torch.Generator().manual_seed(0)
    gate, experts = torch.softmax(torch.randn(5, 3, generator=g), -1), torch.randn(5, 3, 4, generator=g)
    with torch.no_grad():
        assert torch.equal(gated_sum(gate, experts), _einsum(gate, experts))
    outs = [torch.randn(5, 4, generator=g).requires_grad_() for _ in range(3)]
    seen = []
    for o in outs:
        o.register_hook(lambda grad: seen.append(grad.is_contiguous()))
    gated_sum(gate, torch.stack(outs, dim=1)).sum().backward()
    assert seen == [True, True, True]  # each expert's gradient is a contiguous [B, H] block


def test_gated_sum_is_the_einsum_where_products_may_round(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtl_final.nn import gated_sum as module

    g = torch.Generator().manual_seed(1)
    gate = torch.softmax(torch.randn(6, 3, generator=g), -1).requires_grad_()
    experts = torch.randn(6, 3, 4, generator=g).requires_grad_()
    assert gated_sum(gate, experts).grad_fn.name() == "_GatedSumBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gated_sum(gate, experts).grad_fn.name() != "_GatedSumBackward"
    with torch.no_grad():
        assert gated_sum(gate, experts).grad_fn is None
    torch.set_float32_matmul_precision("medium")  # the conftest fixture restores "highest"
    monkeypatch.setattr(module.cpu_matmul, "medium_matmul_rounds", lambda: False)
    assert gated_sum(gate, experts).grad_fn.name() == "_GatedSumBackward"
    monkeypatch.setattr(module.cpu_matmul, "medium_matmul_rounds", lambda: True)  # bfloat16 inputs (AMX)
    assert gated_sum(gate, experts).grad_fn.name() != "_GatedSumBackward"
