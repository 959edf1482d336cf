"""Every model family with sequence fields: one training step of each (MLP and FINAL blocks, towers and
experts, dual KD towers) trains the history's table rows; the first-order term pools the sequences'
weights; bf16 steps; model=din and its build-time error."""
from __future__ import annotations

import pytest
import torch

from mtl_final.config import ConfigError
from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.models import build_model
from mtl_final.models.registry import MODELS
from mtl_final.nn.embedding import FeatureEmbedding
from mtl_final.train.trainer import Trainer
from tests.support.model_fixtures import SMALL, TINY_SEQUENCES, make_cfg, tasks, tiny_batch, tiny_features

WIDTHS = ("model.embedding_dim=4", "block.hidden_units=[8]", "tower.hidden_units=[8]", "expert.hidden_units=[8]")
OWN = {"final": ["model.block2.hidden_units=[8]"], "shared_bottom": ["model.shared_units=[8]"]}


def config(name: str, *overrides: str) -> dict:
    return make_cfg(f"model={name}", *WIDTHS, *OWN.get(name, []), *SMALL.get(name, []), *overrides)


def variants() -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for name in sorted(MODELS):
        if MODELS[name].MULTI_TASK:
            kinds = [(), ("tower=final", "tower.dual=true", "tower.kd=true")]
            if name in ("mmoe", "ple"):
                kinds.append(("expert=final",))
        elif name == "final":
            kinds = [("block=final",), ("block=final", "model.num_blocks=2", "model.kd=true", "model.field_gate=true")]
        else:
            kinds = [(), ("block=final",)]
        out += [(name, k) for k in kinds]
    return out


def sequence_batch(n: int, names: tuple[str, ...]) -> Batch:
    """tiny_batch with sequences, field a's ids all 1: a's rows 2..5 are read by the history only."""
    batch = tiny_batch(n, tasks=names, sequences=True)
    batch.cat[:, 0] = 1
    batch.seq["hist_a"] = torch.where(batch.seq["hist_a"] > 0, 2 + batch.seq["hist_a"] % 4, 0)
    return batch


@pytest.mark.parametrize("name, overrides", variants(), ids=lambda v: v if isinstance(v, str) else ",".join(v) or "-")
def test_every_model_trains_the_history_rows_in_one_step(name, overrides):
    names = ("ctr", "cvr") if MODELS[name].MULTI_TASK else ("ctr",)
    cfg = config(name, "train.optimizer=sgd", *overrides)
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(sequences=True), tasks(*names))
    trainer = Trainer(model, cfg, log=lambda s: None)
    batch = sequence_batch(32, names)
    model.train()
    loss, _ = trainer.train_step(batch, [p for p in model.parameters() if p.requires_grad])
    assert torch.isfinite(loss)
    tables = [m for m in model.modules() if isinstance(m, FeatureEmbedding)]
    for emb in tables:  # the model's embedding and any first-order weights
        grad = emb.table.weight.grad.abs().sum(dim=1)
        assert (grad[2:6] > 0).all(), f"history rows of a get no gradient in {type(emb).__name__} dim {emb.dim}"
        tags_start = emb.sequence_regions[1][0]
        assert (grad[tags_start + 1:tags_start + 7] > 0).all()  # the tags' own region
        assert grad[emb.padding_rows].sum() == 0
    attention = [p for emb in tables for p in emb.attention.parameters()]
    assert attention or name == "lr"  # lr's one embedding holds first-order weights: the history mean-pooled
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_takes_a_bf16_step_with_sequence_fields(name):
    names = ("ctr", "cvr") if MODELS[name].MULTI_TASK else ("ctr",)
    cfg = config(name, "block=final", "tower=final", "expert=final", "train.precision=bf16")
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(sequences=True), tasks(*names))
    trainer = Trainer(model, cfg, log=lambda s: None)
    loss, _ = trainer.train_step(sequence_batch(32, names), [p for p in model.parameters() if p.requires_grad])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.dtype == torch.float32 and (p.grad is None or torch.isfinite(p.grad).all()), pname


@pytest.mark.parametrize("name", ["lr", "fm"])
def test_the_first_order_term_adds_the_mean_of_each_sequence_s_weights(name):
    """lr's embedding / fm's first_order: an attention history contributes the mean of its ids' weights,
    a mean-pooled sequence its mean, both read from the 1-dim table (the history from a's rows)."""
    torch.manual_seed(0)
    model = build_model(make_cfg(f"model={name}", "model.embedding_dim=4"), tiny_features(sequences=True), tasks("ctr"))
    first = model.embedding if name == "lr" else model.first_order.weights
    assert [s.pooling for s in first.features.sequences] == ["mean", "mean"] and len(first.attention) == 0
    with torch.no_grad():
        first.table.weight.normal_()
        first.table.weight[first.padding_rows] = 0
    batch = tiny_batch(16, sequences=True)
    w = first.table.weight.detach().squeeze(-1)
    offsets = torch.tensor([0, 6, 15])
    want = w[batch.cat + offsets].sum(1) + (batch.num * first.numeric.detach().squeeze(-1)).sum(1)
    tags_start = first.sequence_regions[1][0]
    for ids, start in ((batch.seq["hist_a"], 0), (batch.seq["tags"], tags_start)):
        rows = torch.where(ids > 0, ids + start, 0)
        want = want + w[rows].sum(1) / (ids > 0).sum(1).clamp_min(1)
    got = first(batch).detach().flatten(1).sum(1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_din_without_an_attention_sequence_is_an_error_naming_the_fields_and_the_fix():
    mean_only = FeatureSpec(categorical=(("a", 6),), sequences=(TINY_SEQUENCES[1],))
    with pytest.raises(ValueError, match=r"model 'din' needs at least one sequence field with pooling: attention; the "
                                         r"dataset schema has the sequence fields \{'tags': 'mean'\}\. Declare .*"
                                         r"pooling: attention, target: item_id\}, or use model=mlp"):
        build_model(make_cfg("model=din"), mean_only, tasks("ctr"))
    with pytest.raises(ValueError, match=r"the dataset schema has no sequence fields\. Declare"):
        build_model(make_cfg("model=din"), tiny_features(), tasks("ctr"))


def test_din_is_the_block_over_fields_with_an_attention_pooled_history():
    cfg = make_cfg("model=din", "block=final", "block.hidden_units=[8]", "model.embedding_dim=4")
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(sequences=True), tasks("ctr"))
    assert type(model.block).__name__ == "FinalBlock" and len(model.embedding.attention) == 1
    model.eval()
    batch = tiny_batch(8, sequences=True)
    assert model.embedding(batch).shape == (8, tiny_features(sequences=True).num_fields, 4) == (8, 7, 4)
    out = model(batch)
    assert out.probs["ctr"].shape == (8,)
    with pytest.raises(ConfigError, match="cin_hidden_units"):
        make_cfg("model=din", "model.cin_hidden_units=[4]")  # no keys of its own
