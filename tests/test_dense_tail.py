"""Fused dense-layer kernels (mtl_final/nn/dense_tail.py): same values, gradients and running
statistics as the modules they replace; the dropout mask pinned to its hash; every fallback."""
from __future__ import annotations

import ast
import copy
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from mtl_final import kernels
from mtl_final.config import ConfigError
from mtl_final.models import build_model
from mtl_final.models.registry import MODELS
from mtl_final.nn import cpu_matmul, fast_paths
from mtl_final.nn.dense_tail import _THRESHOLD_LEVELS
from mtl_final.nn.dropout import ReLUDropout
from mtl_final.nn.final import FinalBlock
from mtl_final.nn.mlp import MLPBlock
from mtl_final.train.runtime import configure_runtime
from mtl_final.train.trainer import Trainer
from tests.support.model_fixtures import SEQUENCE_MODELS, SMALL, make_cfg, tasks, tiny_batch, tiny_features
from tests.support.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("native_kernels")


def _randomise_bn(block: nn.Module) -> None:
    for m in block.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _step(forward, block: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and `block`'s parameter gradients of forward(x) and a backward of `grad`."""
    x = x.clone().requires_grad_()
    out = forward(x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in block.named_parameters()}


def _run(block: nn.Module, x: torch.Tensor, grad: torch.Tensor, mode: str):
    """Output, input gradient and parameter gradients of one training forward + backward."""
    kernels.use_kernels(mode)
    result = _step(block, block, x, grad)
    kernels.use_kernels("native")
    return result


def _assert_same_step(got, want) -> None:
    """Two `_step` results agree up to the fused kernels' float sums (gradients relative to their size)."""
    (out, dx, grads), (out_ref, dx_ref, grads_ref) = got, want
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
    for name in grads_ref:
        scale = grads_ref[name].abs().max().clamp_min(1.0)
        torch.testing.assert_close(grads[name] / scale, grads_ref[name] / scale, rtol=0, atol=2e-5, msg=name)


BLOCKS = {
    "final_n2": lambda: FinalBlock(12, [16, 8]),
    "final_n2_no_bias": lambda: FinalBlock(12, [16], bias=False),
    "final_n1": lambda: FinalBlock(12, [16, 8], num_steps=1),
    "mlp": lambda: MLPBlock(12, [16, 8]),
}


@pytest.fixture(params=["blas", "onednn"])
def matmul_backend(request):
    """Each backend of the float32 matmuls (nn/cpu_matmul.py), where this CPU allows it; the test runs
    inside its scope."""
    if request.param == "onednn" and cpu_matmul.medium_matmul_rounds():
        pytest.skip("oneDNN's float32 matmuls round to bfloat16 on this CPU (AMX): train.cpu_matmul=onednn is refused")
    before = cpu_matmul.backend()
    cpu_matmul.use_cpu_matmul(request.param)
    with cpu_matmul.scope():
        yield request.param
    cpu_matmul.use_cpu_matmul(before)


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_training_step_matches_the_modules(kind, matmul_backend):
    torch.manual_seed(0)
    fused = BLOCKS[kind]()
    _randomise_bn(fused)
    ref = copy.deepcopy(fused)
    assert fused.layers.fused_units is not None
    x = torch.randn(64, 12) * 3 + 1  # away from zero mean: BatchNorm's centring matters
    grad = torch.randn(64, fused.output_dim)
    _assert_same_step(_run(fused.train(), x, grad, "native"), _run(ref.train(), x, grad, "torch"))
    for (name, buf), (_, buf_ref) in zip(fused.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(buf, buf_ref, rtol=1e-5, atol=1e-7, msg=name)
    # and evaluation with the updated running statistics, without autograd
    fused.eval()
    ref.eval()
    with torch.no_grad():
        kernels.use_kernels("torch")
        expected = ref(x)
        kernels.use_kernels("native")
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-6)


STACKS = {  # (widths, dropout) -> a block whose every width the fused kernels implement
    "final_n2": lambda widths, p: FinalBlock(12, widths, dropout=p),
    "final_n1": lambda widths, p: FinalBlock(12, widths, num_steps=1, dropout=p),
    "mlp": lambda widths, p: MLPBlock(12, widths, dropout=p),
}


@pytest.mark.parametrize("kind", sorted(STACKS))
@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("train", [True, False])
def test_the_chosen_fused_path_matches_the_plain_forward(kind, dropout, train):
    """A dense stack's `forward` takes the fused widths, and they give what its `plain_forward` (the
    modules in turn) gives: in training output, input and parameter gradients and running statistics,
    in evaluation (no autograd) the output. With dropout in training the fused masks are the kernel's
    own, so the plain forward runs one width without dropout under the fused output's mask."""
    torch.manual_seed(0)
    block = STACKS[kind]([16] if dropout and train else [16, 8], dropout).train(train)
    _randomise_bn(block)
    plain = copy.deepcopy(block)
    x = torch.randn(64, 12) * 3 + 1
    if not train:
        with torch.no_grad():
            assert fast_paths.fast_forward(block.layers, x).func is fast_paths.fused_widths
            torch.testing.assert_close(block.layers(x), plain.layers.plain_forward(x), rtol=1e-5, atol=1e-6)
        return
    assert fast_paths.fast_forward(block.layers, x).func is fast_paths.fused_widths
    grad = torch.randn(64, block.output_dim)
    fused = _step(block.layers, block, x, grad)
    mask = torch.ones_like(fused[0])
    if dropout:
        plain.layers[2].p = 0.0
        assert isinstance(plain.layers[2], ReLUDropout)
        mask = torch.where(fused[0] != 0, 1.0 / (1.0 - round(dropout * _THRESHOLD_LEVELS) / _THRESHOLD_LEVELS), 0.0)
    _assert_same_step(fused, _step(lambda t: plain.layers.plain_forward(t) * mask, plain, x, grad))
    for (name, buf), (_, buf_ref) in zip(block.named_buffers(), plain.named_buffers()):
        torch.testing.assert_close(buf, buf_ref, rtol=1e-5, atol=1e-7, msg=name)


def test_a_global_forward_hook_turns_the_fused_path_off():
    block = FinalBlock(8, [8]).train()
    x = torch.randn(16, 8)
    assert fast_paths.fast_forward(block.layers, x) is not None
    seen = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
    try:
        assert fast_paths.watched_by_forward_hooks(block.layers)
        assert fast_paths.fast_forward(block.layers, x) is None
        block(x)
    finally:
        handle.remove()
    assert "Linear" in seen and "BatchNorm1d" in seen  # the hook saw the modules run
    assert not fast_paths.watched_by_forward_hooks(block.layers)
    assert fast_paths.fast_forward(block.layers, x) is not None


def test_running_stats_with_cumulative_momentum():
    torch.manual_seed(1)
    fused = FinalBlock(6, [8])
    fused.layers[1].momentum = None  # cumulative average: factor 1 / num_batches_tracked
    ref = copy.deepcopy(fused)
    for step in range(3):
        x = torch.randn(32, 6) + step
        _run(fused.train(), x, torch.ones(32, 8), "native")
        _run(ref.train(), x, torch.ones(32, 8), "torch")
    bn, bn_ref = fused.layers[1], ref.layers[1]
    assert int(bn.num_batches_tracked) == 3
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)


def _splitmix64(key: int, e: int) -> int:
    """SplitMix64's finaliser of key + (e + 1)·golden, in Python integers."""
    full = (1 << 64) - 1
    z = (key + (e + 1) * 0x9E3779B97F4A7C15) & full
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & full
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & full
    return z ^ (z >> 31)


def _mix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_dropout_mask_is_the_documented_hash_of_key_and_element():
    p, rows, width = 0.3, 16, 10
    block = MLPBlock(4, [width], dropout=p)
    nn.init.zeros_(block.layers[0].weight)  # every row the same: BatchNorm's xhat = 0, y = beta
    block.layers[1].bias.data.fill_(1.0)  # y = 1 everywhere: o is the keep scale, or 0 where dropped
    x = torch.randn(rows, 4)
    torch.manual_seed(7)
    out = block.train()(x)  # draws one int64 key from torch's generator
    torch.manual_seed(7)
    key = int(torch.empty((), dtype=torch.int64).random_())
    threshold = round(p * _THRESHOLD_LEVELS)
    scale = 1.0 / (1.0 - threshold / _THRESHOLD_LEVELS)
    expected = torch.tensor(
        [scale if _splitmix64(key, e) >> 40 >= threshold else 0.0 for e in range(rows * width)]
    ).view(rows, width)
    torch.testing.assert_close(out.detach(), expected)


def test_dropout_rate_scaling_and_gradient_mask():
    torch.manual_seed(2)
    p = 0.1
    fused = FinalBlock(20, [400], dropout=p)
    plain = copy.deepcopy(fused)
    plain.layers[2].p = 0.0  # the same layer without dropout
    x = torch.randn(4096, 20)
    grad = torch.randn(4096, 400)
    out, dx, grads = _run(fused.train(), x, grad, "native")
    kernels.use_kernels("torch")
    x_ref = x.clone().requires_grad_()
    y = plain.train()(x_ref)  # ReLU(BN(FINAL(x)))
    kernels.use_kernels("native")
    positive, kept = y.detach() > 0, out != 0
    assert not (kept & ~positive).any()
    scale = 1.0 / (1.0 - round(p * _THRESHOLD_LEVELS) / _THRESHOLD_LEVELS)
    rate = 1 - kept[positive].float().mean().item()
    assert rate == pytest.approx(p, abs=0.003)  # ~800k positive elements: binomial std 3e-4
    torch.testing.assert_close(out[kept], y.detach()[kept] * scale, rtol=1e-5, atol=1e-5)
    # gradients equal those of the module path under the fused output's own mask
    (y * torch.where(kept, scale, 0.0)).backward(grad)
    torch.testing.assert_close(dx, x_ref.grad, rtol=1e-4, atol=1e-5)
    for name, param in plain.named_parameters():
        s = param.grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(grads[name] / s, param.grad / s, rtol=0, atol=2e-5, msg=name)


def test_dropout_rate_is_read_at_call_time():
    block = MLPBlock(8, [256], dropout=0.5).train()
    x = torch.randn(256, 8)
    assert (block(x) == 0).float().mean() > 0.6  # ReLU zeros about half, dropout half the rest
    block.layers[2].p = 0.0
    assert (block(x) == 0).float().mean() < 0.6


def test_seeded_and_independent_of_the_thread_count():
    block = FinalBlock(20, [64, 32], dropout=0.2).train()
    x = torch.randn(512, 20)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            torch.manual_seed(3)
            outs.append(copy.deepcopy(block)(x).detach())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[2])  # same seed, same threads: same bits
    assert torch.equal(outs[0] != 0, outs[1] != 0)  # the mask does not depend on the thread count
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_unfusable_stacks_use_the_modules():
    assert FinalBlock(8, [8], activation="tanh").layers.fused_units is None
    assert FinalBlock(8, [8], batch_norm=False).layers.fused_units is None
    assert FinalBlock(8, [9], num_steps=3).layers.fused_units is None
    assert FinalBlock(8, [8], aggregation="sum").layers.fused_units is None
    assert FinalBlock(8, [8], sigma="tanh").layers.fused_units is None
    assert MLPBlock(8, []).layers.fused_units is None


def _counting_kernels(monkeypatch) -> list[str]:
    """Record the kernel functions called through kernels.library() from now on."""
    calls: list[str] = []
    library = kernels.library

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(library(), name)

    monkeypatch.setattr(kernels, "library", lambda: Spy() if library() is not None else None)
    return calls


def test_fallbacks_run_the_modules(monkeypatch):
    calls = _counting_kernels(monkeypatch)
    block = FinalBlock(8, [8], dropout=0.1)
    x = torch.randn(16, 8)
    block.train()(x).sum().backward()
    with torch.no_grad():
        block.eval()(x)
    assert calls == ["dense_tail_forward_train", "dense_tail_backward", "dense_tail_forward_eval"]
    calls.clear()
    block.eval()(x)  # evaluation with autograd on: the fused evaluation has no backward
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block.train()(x)
    block.double().train()(x.double())
    block.float()
    kernels.use_kernels("torch")
    block.train()(x)
    kernels.use_kernels("native")
    assert calls == []
    block.train()
    block.layers[1].eval()  # BatchNorm frozen while the rest trains
    block.zero_grad(set_to_none=True)
    block(x).sum().backward()
    assert calls == [] and block.layers[0].linear.weight.grad is not None
    block.train()
    seen = []
    block.layers[0].linear.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    block.train()(x)  # a hook on a layer must see its call
    assert seen == [torch.Size([16, 8])] and calls == []


def test_one_row_training_batch_raises_batchnorm_error():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        FinalBlock(8, [8]).train()(torch.randn(1, 8))


def test_missing_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_loaded", None)
    monkeypatch.setattr(kernels, "_failed", None)
    monkeypatch.setenv("MTL_FINAL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="fused CPU kernels unavailable, using PyTorch ops"):
        assert kernels.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.library() is None  # once
    block = FinalBlock(8, [8]).train()
    out = block(torch.randn(16, 8))
    assert out.shape == (16, 8)


def test_kernel_mode_is_validated():
    with pytest.raises(ValueError, match="kernels must be one of"):
        kernels.use_kernels("cuda")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("block", ["mlp", "final"])
def test_every_model_trains_the_same_with_fused_kernels(name, block):
    """One Trainer step of each model with train.kernels=native and =torch (no dropout): same loss,
    same gradients, same evaluation output. SGD, not Adam: Adam's first step is ±lr whatever the
    gradient's size, and a Linear bias in front of BatchNorm has a gradient of pure rounding noise."""
    multi = MODELS[name].MULTI_TASK
    names = ("ctr", "cvr") if multi else ("ctr",)
    kinds = [f"block={block}", f"tower={block}", f"expert={block}"] if multi else [f"block={block}"]
    results = {}
    for mode in ("native", "torch"):
        cfg = make_cfg(f"model={name}", *kinds, "block.hidden_units=[8,8]", "tower.hidden_units=[8]",
                       "expert.hidden_units=[8]", "block.dropout=0", "tower.dropout=0", "expert.dropout=0",
                       f"train.kernels={mode}", "train.optimizer=sgd", *SMALL.get(name, []))
        torch.manual_seed(0)
        seq = name in SEQUENCE_MODELS
        model = build_model(cfg, tiny_features(seq), tasks(*names))
        configure_runtime(cfg["train"], "cpu", lambda s: None)
        trainer = Trainer(model, cfg, log=lambda s: None)
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        loss, _ = trainer.train_step(tiny_batch(32, tasks=names, sequences=seq), params)
        grads = [p.grad.clone() if p.grad is not None else None for p in params]
        model.eval()
        with torch.no_grad():
            probs = model(tiny_batch(16, seed=1, tasks=names, sequences=seq)).probs
        results[mode] = (loss.detach(), grads, probs)
    kernels.use_kernels("native")
    (loss, grads, probs), (loss_ref, grads_ref, probs_ref) = results["native"], results["torch"]
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(grads, grads_ref):
        if g_ref is None:
            assert g is None
        else:
            torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-5)
    for key in probs_ref:
        torch.testing.assert_close(probs[key], probs_ref[key], rtol=1e-5, atol=1e-6)


def _bf16_rounded_reference(block: nn.Module) -> nn.Module:
    """A copy of `block` that runs its modules (the hooks turn the fused path off) on bfloat16-rounded
    weights and layer inputs: what a float32 matmul at precision "medium" multiplies, summed exactly."""
    ref = copy.deepcopy(block)
    for layer in ref.modules():
        if isinstance(layer, nn.Linear):
            layer.weight.data = layer.weight.data.bfloat16().float()
            layer.register_forward_pre_hook(lambda m, args: (args[0].bfloat16().float(),))
    return ref


def test_medium_matmul_precision_rounds_the_fused_matmul_inputs_to_bfloat16():
    if not cpu_matmul.medium_matmul_rounds():
        pytest.skip("matmul precision medium does not round to bfloat16 on this CPU (seen with AMX only)")
    torch.manual_seed(3)
    block = FinalBlock(64, [64])  # one layer: a deeper one's rounding flips on sum-order noise upstream
    _randomise_bn(block)
    x = torch.randn(256, 64) * 2 + 0.5
    for train in (True, False):
        fused, ref = copy.deepcopy(block).train(train), _bf16_rounded_reference(block).train(train)
        with torch.no_grad():
            exact = copy.deepcopy(block).train(train)(x)
            expected = ref(x)
            torch.set_float32_matmul_precision("medium")
            got = fused(x)
            torch.set_float32_matmul_precision("highest")
        assert fused.layers.fused_units is not None and not fast_paths.watched_by_forward_hooks(fused.layers)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert (got - exact).abs().max() > 1e-3  # the rounding is really there


def test_kernels_choice_is_validated():
    with pytest.raises(ConfigError, match="train.kernels"):
        make_cfg("train.kernels=cuda")


def test_fresh_build_shares_torchs_openmp_runtime(tmp_path):
    # A fresh process with an empty cache: the kernels compile, and load against the libgomp torch
    # loaded (two OpenMP runtimes would each keep a spinning thread pool). Fresh also because
    # scikit-learn, imported by other tests, brings a vendored libgomp of its own.
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps (Linux)")
    code = ("import torch; from mtl_final import kernels; assert kernels.library() is not None; "
            "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "MTL_FINAL_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "kernels").glob("cpu_kernels-*.so"))) == 1
    libraries = ast.literal_eval(done.stdout.strip())
    assert len(libraries) == 1 and "torch" in libraries[0], libraries


def test_embedding_backward_kernel_is_bit_identical_to_index_add():
    from mtl_final.data.features import Batch, FeatureSpec
    from mtl_final.nn.embedding import FeatureEmbedding, _LookupRows

    spec = FeatureSpec(categorical=(("a", 7), ("b", 50), ("c", 3)), numeric=())
    emb = FeatureEmbedding(spec, 6)
    g = torch.Generator().manual_seed(5)
    cat = torch.stack([torch.randint(0, s, (3000,), generator=g) for s in (7, 50, 3)], dim=1)
    grad = torch.randn(3000, 3, 6, generator=g) * 1e3  # large, mixed magnitudes: order matters
    grads = {}
    for mode in ("native", "torch"):
        kernels.use_kernels(mode)
        emb.table.weight.grad = None
        emb(Batch(cat, torch.zeros(3000, 0), {})).backward(grad)
        grads[mode] = emb.table.weight.grad.clone()
    kernels.use_kernels("native")
    assert torch.equal(grads["native"], grads["torch"])
    assert torch.equal(grads["native"][emb.offsets], torch.zeros(3, 6))  # padding rows get nothing
    # the kernel also finds a value outside its own field's vocabulary (here inside the next field's
    # rows), past the forward's check
    bad = cat.clone()
    bad[17, 0] = 7
    rows = _LookupRows.apply(emb.table.weight, bad + emb.offsets, emb.offsets, emb.field_ends)
    with pytest.raises(IndexError, match="categorical field 0: encoded value 7 at batch row 17 is outside its vocabulary"):
        rows.sum().backward()


def _diagnostic():
    return load_script("benchmarks/hash_mask_dropout.py")


@pytest.mark.parametrize("kind", ["mlp", "final"])
def test_hash_mask_diagnostic_draws_the_kernels_masks(kind):
    # benchmarks/hash_mask_dropout.py runs PyTorch ops with the kernel's dropout masks; its results
    # mean something only if those masks are the kernel's, draw for draw (FINAL's N=2 step included:
    # its [h1, h1 ⊙ h2] columns are elements r·D + j and r·D + S + j of the layer's output)
    import mtl_final.nn.dropout as dropout_module

    diagnostic = _diagnostic()
    if kind == "mlp":
        block = MLPBlock(4, [300, 300], dropout=0.2)
    else:
        block = FinalBlock(4, [300, 300], dropout=0.2)
    x = torch.randn(64, 4)
    outputs = {}
    original = (dropout_module.keep_multiplier, dropout_module.keep_scale)
    for mode in ("native", "torch"):
        kernels.use_kernels(mode)
        torch.manual_seed(11)
        try:
            if mode == "torch":
                diagnostic.use_kernel_masks()
            outputs[mode] = block.train()(x).detach()
        finally:
            dropout_module.keep_multiplier, dropout_module.keep_scale = original
    kernels.use_kernels("native")
    assert torch.equal(outputs["native"] > 0, outputs["torch"] > 0)
    torch.testing.assert_close(outputs["native"], outputs["torch"])


def test_hash_mask_diagnostic_masks_match_python_references():
    # each --masks choice draws what its docstring says: one key per call, 24-bit uniforms against
    # round(p·2^24); splitmix64 (the kernel's) and mix32 (the kernel's up to 4e6081c, 32-bit element ids)
    diagnostic = _diagnostic()
    threshold = round(0.2 * (1 << 24))
    references = {
        "splitmix64": lambda key, e: _splitmix64(key, e) >> 40,
        "mix32": lambda key, e: _mix32(_mix32((e + (key & 0xFFFFFFFF)) & 0xFFFFFFFF) ^ (key >> 32)) >> 8,
    }
    assert set(references) == set(diagnostic.MASKS)
    for name, reference in references.items():
        torch.manual_seed(5)
        key = int(torch.empty((), dtype=torch.int64).random_())
        torch.manual_seed(5)
        multiplier = diagnostic.MASKS[name](torch.Size([64, 50]), 0.2, torch.device("cpu"), torch.float32)
        expected = torch.tensor([reference(key, e) >= threshold for e in range(64 * 50)])
        assert torch.equal(multiplier.flatten() > 0, expected), name
        assert torch.allclose(multiplier[multiplier > 0], torch.tensor(1 / (1 - threshold / (1 << 24)))), name


def test_512_bit_build_is_bit_identical_to_the_256_bit_one(tmp_path):
    """The x86 build adds -mprefer-vector-width=512 for speed; every output of both kernels, with
    dropout, for N = 1 and 2 and widths that leave vector remainders, equals the default build's."""
    wide = "-mprefer-vector-width=512"
    if wide not in kernels._FLAGS:
        pytest.skip("the 512-bit preference is only added on x86-64")
    compiler = kernels.find_compiler()
    libs = []
    for name, flags in (("w512", kernels._FLAGS), ("w256", [f for f in kernels._FLAGS if f != wide])):
        kernels.build(tmp_path / f"{name}.so", compiler, flags)
        libs.append(kernels.load(tmp_path / f"{name}.so"))
    gen = torch.Generator().manual_seed(5)
    rows, threshold, scale = 67, round(0.3 * _THRESHOLD_LEVELS), 1 / 0.7
    for steps, width in ((1, 90), (2, 90), (2, 38)):
        z, g = torch.randn(rows, width, generator=gen), torch.randn(rows, width, generator=gen)
        b, gamma, beta = (torch.randn(width, generator=gen) for _ in range(3))
        outputs = []
        for lib in libs:
            o, dz = torch.empty(rows, width), torch.empty(rows, width)
            passed = torch.empty(rows, width, dtype=torch.uint8)
            stats = [torch.empty(width) for _ in range(6)]  # mean, var, invstd, dgamma, dbeta, dbias
            p = kernels.ptr
            assert lib.dense_tail_forward_train(p(z), p(b), p(gamma), p(beta), rows, width, steps, 1e-5,
                                                threshold, scale, 99, p(o), p(passed), *map(p, stats[:3]), 2) == 0
            assert lib.dense_tail_backward(p(g), p(passed), p(z), p(b), p(gamma), p(stats[0]), p(stats[2]),
                                           rows, width, steps, scale, p(dz), *map(p, stats[3:]), 2) == 0
            outputs.append([o, passed, dz, *stats])
        assert 0 < int(outputs[0][1].sum()) < rows * width
        for got, want in zip(*outputs):
            assert torch.equal(got, want)
