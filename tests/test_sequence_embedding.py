"""Sequence fields in FeatureEmbedding: the table layout, mean / sum / max pooling and DIN target attention
against hand computations, one shared table trained by both fields, the regulariser's split, the
vocabulary check, bad layouts, and a FeatureSpec without sequences computing what it did before."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mtl_final.data.features import Batch, FeatureSpec, SequenceSpec
from mtl_final.models import build_model
from mtl_final.nn.embedding import FeatureEmbedding, _LookupRows, pool_gathered, pool_rows
from mtl_final.nn.target_attention import TargetAttention
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features

CAT = (("a", 6), ("b", 9))
# hist shares a's region (rows 0..5), tags owns rows 15..19 after a (0..5) and b (6..14)
HIST = SequenceSpec("hist", 4, 6, "a", "mean", None)
TAGS = SequenceSpec("tags", 3, 5, None, "mean", None)


def features(hist_pooling: str = "mean", tags_pooling: str = "mean", **hist) -> FeatureSpec:
    target = "a" if hist_pooling == "attention" else None
    return FeatureSpec(categorical=CAT, numeric=("x",),
                       sequences=(dataclasses.replace(HIST, pooling=hist_pooling, target=target, **hist),
                                  dataclasses.replace(TAGS, pooling=tags_pooling)))


def embedding(spec: FeatureSpec, dim: int = 3, seed: int = 0) -> FeatureEmbedding:
    """A float64 FeatureEmbedding with N(0, 1) rows (padding rows 0) and N(0, 1) attention weights."""
    torch.manual_seed(seed)
    emb = FeatureEmbedding(spec, dim).double()
    with torch.no_grad():
        for p in emb.parameters():
            p.normal_()
        emb.table.weight[emb.padding_rows] = 0.0
    return emb


def two_rows() -> Batch:
    """Row 0: hist [2, 3, 3, pad], tags [1, pad, pad]; row 1: hist empty, tags [4, 2, 1]."""
    return Batch(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[0.5], [-1.0]], dtype=torch.float64),
                 seq={"hist": torch.tensor([[2, 3, 3, 0], [0, 0, 0, 0]]), "tags": torch.tensor([[1, 0, 0], [4, 2, 1]])})


def test_the_table_holds_the_categorical_regions_then_each_unshared_sequence_region():
    emb = embedding(features())
    assert emb.table.weight.shape == (6 + 9 + 5, 3)
    assert emb.sequence_regions == [(0, 6), (15, 5)]
    assert emb.padding_rows.tolist() == [0, 6, 15]
    assert features().num_fields == 5 and features().field_names == ["a", "b", "x", "hist", "tags"]
    out = emb(two_rows())
    assert out.shape == (2, 5, 3)
    w = emb.table.weight
    torch.testing.assert_close(out[:, 0], w[[1, 3]], rtol=0, atol=0)  # a
    torch.testing.assert_close(out[:, 1], w[[6 + 2, 6 + 4]], rtol=0, atol=0)  # b
    torch.testing.assert_close(out[:, 2], torch.tensor([[0.5], [-1.0]], dtype=torch.float64) * emb.numeric[0])


@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_pooling_equals_a_hand_computation(pooling):
    emb = embedding(features(pooling, pooling))
    w = emb.table.weight.detach()
    with torch.no_grad():
        w[2:4] = -w[2:4].abs() - 0.1  # all negative: a max that counted the padding would give 0
    out = emb(two_rows()).detach()
    zero = torch.zeros(3, dtype=torch.float64)
    hist0, tags1 = w[[2, 3, 3]], w[[15 + 4, 15 + 2, 15 + 1]]
    reduce = {"mean": lambda e: e.sum(0) / len(e), "sum": lambda e: e.sum(0), "max": lambda e: e.max(0).values}[pooling]
    torch.testing.assert_close(out[0, 3], reduce(hist0), rtol=1e-12, atol=0)  # mean: / 3 ids, not / max_len 4
    torch.testing.assert_close(out[1, 3], zero, rtol=0, atol=0)  # empty sequence: the zero vector
    torch.testing.assert_close(out[0, 4], reduce(w[[15 + 1]]), rtol=1e-12, atol=0)
    torch.testing.assert_close(out[1, 4], reduce(tags1), rtol=1e-12, atol=0)
    assert (out[0, 3] < 0).all() and torch.isfinite(out).all()


@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_embedding_bag_and_the_gathered_form_agree_in_value_and_gradient(pooling):
    """pool_rows runs embedding_bag; the export traces pool_gathered: the same pooling."""
    torch.manual_seed(1)
    table = torch.randn(20, 4, dtype=torch.float64)  # a padding row 0 that is not zero: both ignore it
    rows = torch.randint(1, 20, (64, 7))
    rows[torch.arange(7) >= (torch.arange(64) % 8)[:, None]] = 0  # every length 0..7
    grads = []
    for pool in (lambda t: pool_rows(t, rows, pooling),
                 lambda t: pool_gathered(F.embedding(rows, t, padding_idx=0), rows > 0, pooling)):
        t = table.clone().requires_grad_()
        out = pool(t)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        grads.append((out.detach(), t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-15)
    assert grads[0][1][0].abs().sum() == 0  # the padding row


def naive_attention(unit: TargetAttention, history: torch.Tensor, ids: torch.Tensor, target: torch.Tensor):
    """Σ_l w_l e_l with w_l = unit([e_l, e_t, e_l − e_t, e_l ⊙ e_t]), one row and one position at a time."""
    out = torch.zeros(history.shape[0], history.shape[2], dtype=history.dtype)
    for b in range(history.shape[0]):
        for pos in range(history.shape[1]):
            if ids[b, pos] == 0:
                continue
            e, t = history[b, pos], target[b]
            w = unit.unit(torch.cat([e, t, e - t, e * t]))
            out[b] = out[b] + w * e
    return out


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "prelu"])
def test_attention_equals_a_per_row_loop(activation):
    emb = embedding(features("attention", attention_units=(5, 4), attention_activation=activation))
    batch = two_rows()
    batch.seq["hist"] = torch.tensor([[2, 3, 5, 0], [1, 0, 0, 0]])
    out = emb(batch)
    w = emb.table.weight
    want = naive_attention(emb.attention[0], w[batch.seq["hist"]], batch.seq["hist"], w[batch.cat[:, 0]])
    torch.testing.assert_close(out[:, 3], want, rtol=1e-12, atol=1e-14)
    empty = two_rows()  # row 1's history is empty
    torch.testing.assert_close(emb(empty)[1, 3], torch.zeros(3, dtype=torch.float64), rtol=0, atol=0)


def test_attention_ignores_whatever_sits_at_padded_positions():
    emb = embedding(features("attention"))
    batch = two_rows()
    before = emb(batch).detach()
    w, padded = emb.table.weight.detach(), batch.seq["hist"] == 0
    unmasked = emb.attention[0].weights(w[batch.seq["hist"]], torch.ones_like(padded), w[batch.cat[:, 0]])
    assert (unmasked[padded].abs() > 0).all()  # the unit does score padding: the mask is what removes it
    with torch.no_grad():
        emb.table.weight[0] = torch.randn(3, dtype=torch.float64)  # the padding row: not read by a (ids >= 1)
    torch.testing.assert_close(emb(batch)[:, 3], before[:, 3], rtol=0, atol=0)
    with torch.no_grad():
        emb.table.weight[0] = 0.0
    longer = dataclasses.replace(batch, seq={**batch.seq, "hist": F.pad(batch.seq["hist"], (0, 5))})
    torch.testing.assert_close(emb(longer), before, rtol=0, atol=0)  # more padding, same pooled vector


@pytest.mark.parametrize("pooling", ["mean", "sum", "max", "attention"])
def test_a_shared_table_is_one_parameter_trained_by_the_field_and_the_sequence(pooling):
    emb = embedding(features(pooling))
    tables = [p for p in emb.parameters() if p.dim() == 2 and p.shape[0] == 20]
    assert tables == [emb.table.weight]
    batch = Batch(torch.tensor([[1, 2], [1, 3]]), torch.zeros(2, 1, dtype=torch.float64),
                  seq={"hist": torch.tensor([[2, 3, 0, 0], [1, 4, 4, 0]]), "tags": torch.tensor([[1, 2, 0], [0, 0, 0]])})
    (emb(batch) * torch.randn(2, 5, 3, dtype=torch.float64)).sum().backward()
    grad = emb.table.weight.grad.abs().sum(dim=1)
    # a's region: row 1 from the field and the history, rows 2..4 from the history only; row 5 untouched
    if pooling == "max":  # max trains, per dimension, the row holding the maximum only
        assert grad[1] > 0 and grad[2:5].sum() > 0
    else:
        assert (grad[1:5] > 0).all()
    assert grad[5] == 0 and grad[[0, 6, 15]].sum() == 0  # padding rows get nothing
    assert grad[16] > 0 if pooling != "max" else grad[16:18].sum() > 0


def test_the_regulariser_counts_the_shared_table_once_and_the_attention_unit_as_network():
    spec = features("attention")
    cfg = make_cfg("model=mlp", "block.hidden_units=[4]", "model.embedding_dim=3",
                   "model.embedding_regularizer=0.1", "model.net_regularizer=0.01")
    torch.manual_seed(0)
    model = build_model(cfg, spec, tasks("ctr"))
    emb = model.embedding
    unit = set(map(id, emb.attention.parameters()))
    assert unit and unit <= set(map(id, model.network_parameters()))
    assert not unit & set(map(id, emb.embedding_parameters()))
    net = [p for p in model.parameters() if id(p) not in {id(emb.table.weight), id(emb.numeric)}]
    want = 0.05 * (emb.table.weight.pow(2).sum() + emb.numeric.pow(2).sum()) + 0.005 * sum(p.pow(2).sum() for p in net)
    torch.testing.assert_close(model.regularization(), want)


@pytest.mark.parametrize("ids, value, position", [([[1, 2, 6, 0]], 6, 2), ([[-1, 0, 0, 0]], -1, 0)])
def test_an_id_outside_the_sequence_region_is_an_index_error_naming_the_field(ids, value, position):
    emb = FeatureEmbedding(features(), 3)
    batch = Batch(torch.tensor([[1, 1]]), torch.zeros(1, 1), seq={"hist": torch.tensor(ids), "tags": torch.zeros(1, 3, dtype=torch.long)})
    with pytest.raises(IndexError, match=rf"^sequence field 'hist' \(position {position}\): encoded value {value} at "
                                         r"batch row 0 is outside its vocabulary \[0, 6\)"):
        emb(batch)


@pytest.mark.parametrize("change, message", [
    ({"share_embedding": "x"}, r"sequence field 'hist': share_embedding 'x' is not a categorical field; categorical fields: \['a', 'b'\]"),
    ({"vocab_size": 7}, r"sequence field 'hist': vocab_size 7 differs from 6, that of its share_embedding field 'a'"),
    ({"pooling": "median"}, r"sequence field 'hist': pooling must be one of \['mean', 'sum', 'max', 'attention'\]"),
    ({"pooling": "attention", "target": "b"}, r"sequence field 'hist': attention needs a target in the sequence's own table space"),
    ({"pooling": "attention", "target": None}, r"got target None"),
    ({"pooling": "attention", "target": "a", "attention_activation": "tanh"}, r"attention_activation must be one of"),
    ({"pooling": "attention", "target": "a", "attention_units": ()}, r"attention_units must be a non-empty list"),
])
def test_a_layout_the_embedding_cannot_serve_is_one_clear_error(change, message):
    spec = FeatureSpec(categorical=CAT, sequences=(dataclasses.replace(HIST, **change),))
    with pytest.raises(ValueError, match=message):
        FeatureEmbedding(spec, 3)


def test_a_batch_without_the_sequence_names_the_field():
    emb = FeatureEmbedding(features(), 3)
    with pytest.raises(ValueError, match=r"the batch has no ids for sequence field 'hist' \(Batch.seq holds \['tags'\]\)"):
        emb(Batch(torch.tensor([[1, 1]]), torch.zeros(1, 1), seq={"tags": torch.zeros(1, 3, dtype=torch.long)}))


def test_without_sequences_the_embedding_is_the_categorical_lookup_and_numeric_products_bit_for_bit():
    spec = tiny_features()
    torch.manual_seed(0)
    emb = FeatureEmbedding(spec, 4)
    with torch.no_grad():
        emb.table.weight.normal_()
        emb.table.weight[emb.offsets] = 0
    batch = tiny_batch(32)
    out = emb(batch)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    ref_table = emb.table.weight.detach().clone().requires_grad_()
    ref_num = emb.numeric.detach().clone().requires_grad_()
    ref = torch.cat([_LookupRows.apply(ref_table, batch.cat + emb.offsets, emb.offsets, emb.field_ends),
                     batch.num.unsqueeze(-1) * ref_num], dim=1)
    (ref * weights).sum().backward()
    assert torch.equal(out, ref) and torch.equal(emb.table.weight.grad, ref_table.grad)
    assert torch.equal(emb.numeric.grad, ref_num.grad)
    assert emb.padding_rows.tolist() == emb.offsets.tolist() and len(emb.attention) == 0


def test_adding_sequence_fields_leaves_the_other_fields_output_and_gradients_unchanged():
    plain, with_seq = tiny_features(), tiny_features(sequences=True)
    torch.manual_seed(0)
    a = FeatureEmbedding(plain, 4)
    b = FeatureEmbedding(with_seq, 4)
    with torch.no_grad():
        b.table.weight[: a.table.weight.shape[0]] = a.table.weight
        b.numeric.copy_(a.numeric)
    batch = tiny_batch(32, sequences=True)
    out_a, out_b = a(batch), b(batch)
    assert out_b.shape == (32, plain.num_fields + 2, 4)
    assert torch.equal(out_b[:, : plain.num_fields], out_a)
    weights = torch.randn_like(out_a)
    (out_a * weights).sum().backward()
    (out_b[:, : plain.num_fields] * weights).sum().backward()
    assert torch.equal(b.table.weight.grad[: a.table.weight.shape[0]], a.table.weight.grad)
