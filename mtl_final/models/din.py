"""DIN (Zhou et al., KDD 2018): the Deep Interest Network — attention-pooled behaviour histories + MLP."""
from __future__ import annotations

from mtl_final.models.mlp import MLP
from mtl_final.models.registry import register_model


@register_model("din")
class DIN(MLP):
    """For a history h = (h_1..h_L) of ids and its target t (a candidate item, same table):

        w_l     = a([e(h_l), e(t), e(h_l) − e(t), e(h_l) ⊙ e(t)])   (local activation unit a, no softmax)
        v_h     = Σ_l w_l · e(h_l)                                   (padding weighs 0)
        logit   = Linear(block([e_1, …, e_F, v_h, …]))               (every other field as embedded)

    The attention pooling is the embedding's (the schema's `pooling: attention`, `target`,
    `attention_units`, `attention_activation` of each sequence field), the deep part cfg.block
    ('final' gives DIN+FINAL): the MLP model over field embeddings that hold at least one
    attention-pooled history. No model keys of its own. Shapes: [batch, F·D] → block → logit [batch].
    """

    def __init__(self, features, tasks, cfg) -> None:
        if not any(s.pooling == "attention" for s in features.sequences):
            sequences = {s.name: s.pooling for s in features.sequences}
            have = f"the sequence fields {sequences}" if sequences else "no sequence fields"
            raise ValueError(
                f"model 'din' needs at least one sequence field with pooling: attention; the dataset schema has "
                f"{have}. Declare a behaviour history in the schema, e.g. {{name: hist_items, type: sequence, "
                "max_len: 50, share_embedding: item_id, pooling: attention, target: item_id}, or use model=mlp")
        super().__init__(features, tasks, cfg)
