"""Models, one family per file; importing this package registers them all."""
from mtl_final.models.base import ModelOutput, RankingModel
from mtl_final.models.registry import MODELS, build_model, register_model
from mtl_final.models import (  # noqa: F401  (registration)
    afm, aitm, autoint, cin, crossnet, crossnetv2, dcn, dcnv2, deepfm, din, escm2, esmm, final, fm, lr, mlp, mmoe,
    ple, sam, shared_bottom, xdeepfm,
)

__all__ = ["MODELS", "ModelOutput", "RankingModel", "build_model", "register_model"]
