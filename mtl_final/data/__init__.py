"""Data pipeline: schema, validation, encoding, memory-mapped cache and mini-batches."""
from .batches import BatchLoader
from .encoders import CategoricalEncoder, FeatureEncoders, NumericEncoder, SequenceEncoder, parse_numeric
from .errors import DataError
from .features import Batch, BatchShare, FeatureSpec, SequenceSpec
from .reader import iter_chunks, read_header
from .schema import DatasetSchema, FieldSpec, TaskSpec
from .store import CACHE_VERSION, EncodedStore, SplitArrays, TensorSplit, cache_key

__all__ = [
    "Batch",
    "BatchShare",
    "BatchLoader",
    "CACHE_VERSION",
    "CategoricalEncoder",
    "DataError",
    "DatasetSchema",
    "EncodedStore",
    "FeatureEncoders",
    "FeatureSpec",
    "FieldSpec",
    "NumericEncoder",
    "SequenceEncoder",
    "SequenceSpec",
    "SplitArrays",
    "TaskSpec",
    "TensorSplit",
    "cache_key",
    "iter_chunks",
    "parse_numeric",
    "read_header",
]
