"""Deterministic ad-funnel simulator: Ali-CCP-like impressions with planted CTR/CVR ground truth.

The simulator draws a *world* (popularity distributions, per-value latent vectors and
weights) from ``seed`` alone, then generates impressions in fixed-size blocks of
``BLOCK_ROWS`` rows, block ``b`` using its own RNG seeded by ``(seed, b)``.  Rows
therefore depend only on ``(n_rows, seed)`` (and ``splits`` for which file they land
in), never on ``chunk_rows``, which only sets how many rows are buffered before a
write (Parquet row-group size).  At most ``max(chunk_rows, BLOCK_ROWS) + BLOCK_ROWS``
rows are ever held in memory, so tens of millions of rows stream fine.

Ground truth (all terms indexed by the impression's feature values)::

    logit_ctr = b_ctr + sum_f w_f[x_f]                        (1st order, all fields)
              - 0.7 log(position)                              (position bias, CTR only)
              + <U[user], V[item]> + A[category, age] + H[hour, device]     (2nd order)
              + sum_k P[user,k] Q[category,k] R[hour,k]        (3-way user x category x hour)
              + 1[price high] * (-1.0 1[age young] + 0.7 1[age old])   (thresholded price x age)
    logit_cvr = b_cvr + other 1st-order weights (partly correlated with CTR's, price
                much stronger, no position term)
              + <U2[user], V2[item]> (U2, V2 partly correlated with U, V)
              + G[category, gender] + S[shop, age]
              + sum_k P2[user,k] B2[brand,k] D2[device,k]      (3-way user x brand x device)
              - 1.0 1[price high] 1[activity low]              (thresholded price x activity)

``b_ctr`` is tuned (on a seed-derived calibration sample) so the mean pCTR is
``TARGET_CTR`` and ``b_cvr`` so the click-weighted mean pCVR is ``TARGET_CVR_GIVEN_CLICK``.
Labels: ``click ~ Bernoulli(pCTR)``, ``conversion = click * Bernoulli(pCVR)``; the true
probabilities are stored as ``true_pctr`` / ``true_pcvr`` (not features), so CVR can be
evaluated over the entire impression space, unclicked rows included.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa

GENERATOR_VERSION = "funnel-sim-1"
BLOCK_ROWS = 1 << 15  # rows per RNG block; changing it changes the generated data
TARGET_CTR = 0.05
TARGET_CVR_GIVEN_CLICK = 0.15
CALIBRATION_ROWS = 50_000
LOGIT_CLIP = 12.0  # keeps float32 probabilities strictly inside (0, 1)

# (name, cardinality); values are the integers 0 .. cardinality - 1 (position: 1 .. 10)
CATEGORICAL_FIELDS: tuple[tuple[str, int], ...] = (
    ("user_id", 20_000),
    ("user_age_bucket", 7),
    ("user_gender", 3),
    ("user_city", 300),
    ("item_id", 15_000),
    ("item_category", 100),
    ("item_brand", 2_000),
    ("item_shop", 1_000),
    ("hour", 24),
    ("device", 4),
    ("position", 10),
)
# (name, norm, fill_na or None) as written to schema.yaml
NUMERIC_FIELDS: tuple[tuple[str, str, float | None], ...] = (
    ("item_price", "log1p", None),
    ("user_activity", "log1p", None),
    ("item_ctr_hist", "standard", 0.0),  # NaN for items without history
)
LABEL_COLUMNS = ("click", "conversion")
TRUTH_COLUMNS = ("true_pctr", "true_pcvr")
SPLIT_NAMES = ("train", "valid", "test")

_CARD = dict(CATEGORICAL_FIELDS)
_MISSING_HIST_ITEM_FRACTION = 0.03


def _arrow_schema() -> pa.Schema:
    cols = [pa.field(name, pa.int32()) for name, _ in CATEGORICAL_FIELDS]
    cols += [pa.field(name, pa.float32()) for name, _, _ in NUMERIC_FIELDS]
    cols += [pa.field(name, pa.int8()) for name in LABEL_COLUMNS]
    cols += [pa.field(name, pa.float32()) for name in TRUTH_COLUMNS]
    return pa.schema(cols)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Elementwise logistic of any-shape float array (same shape back, float64)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _zipf_cdf(rng: np.random.Generator, n: int, exponent: float, offset: float = 1.0) -> np.ndarray:
    """CDF [n] of a Zipf-like law p_k ~ (rank_k + offset)^-exponent over randomly permuted ids."""
    p = (np.arange(n, dtype=np.float64) + offset) ** -exponent
    p = p[rng.permutation(n)]
    cdf = np.cumsum(p)
    return cdf / cdf[-1]


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """[size] int64 ids drawn from the categorical law with CDF ``cdf`` [n]."""
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(idx, cdf.shape[0] - 1)


@dataclass
class World:
    """Everything that is fixed for a seed: feature laws and ground-truth parameters.

    Per-value arrays are indexed by the categorical value (e.g. ``user_age[u]`` is [N_user]),
    latent factors are [cardinality, k].  ``ctr_w`` / ``cvr_w`` map field -> first-order weight
    vector [cardinality]; ``pair`` tables are [card_a, card_b].
    """

    cdf: dict[str, np.ndarray]
    user_age: np.ndarray
    user_gender: np.ndarray
    user_city: np.ndarray
    user_activity: np.ndarray
    item_category: np.ndarray
    item_brand: np.ndarray
    item_shop: np.ndarray
    item_log_price: np.ndarray
    log_price_mean: float
    log_price_std: float
    log_act_mean: float
    log_act_std: float
    ctr_w: dict[str, np.ndarray]
    cvr_w: dict[str, np.ndarray]
    U: np.ndarray
    V: np.ndarray
    U2: np.ndarray
    V2: np.ndarray
    cat_age: np.ndarray
    hour_device: np.ndarray
    cat_gender: np.ndarray
    shop_age: np.ndarray
    tri_user: np.ndarray
    tri_cat: np.ndarray
    tri_hour: np.ndarray
    tri2_user: np.ndarray
    tri2_brand: np.ndarray
    tri2_device: np.ndarray
    ctr_bias: float = 0.0
    cvr_bias: float = 0.0
    item_ctr_hist: np.ndarray | None = None  # [N_item] float64, NaN = no history


def make_world(seed: int) -> World:
    """Draw the world for ``seed`` and calibrate the two biases (deterministic in ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    nu, ni = _CARD["user_id"], _CARD["item_id"]
    ncat, nbr, nshop = _CARD["item_category"], _CARD["item_brand"], _CARD["item_shop"]
    nage, ngen, ncity = _CARD["user_age_bucket"], _CARD["user_gender"], _CARD["user_city"]
    nh, nd, npos = _CARD["hour"], _CARD["device"], _CARD["position"]

    hours = np.arange(nh)
    hour_p = 1.0 + 0.8 * np.sin(2 * np.pi * (hours - 9) / 24.0)  # evening peak
    cdf = {
        "user_id": _zipf_cdf(rng, nu, 1.0, 5.0),
        "item_id": _zipf_cdf(rng, ni, 1.05, 3.0),
        "hour": np.cumsum(hour_p) / hour_p.sum(),
        "device": np.cumsum([0.55, 0.30, 0.10, 0.05]),
        "position": np.arange(1, npos + 1) / npos,
    }
    age_p = np.array([0.05, 0.20, 0.25, 0.20, 0.15, 0.10, 0.05])
    user_age = _draw(np.cumsum(age_p), rng, nu)
    user_gender = _draw(np.cumsum([0.45, 0.50, 0.05]), rng, nu)
    user_city = _draw(_zipf_cdf(rng, ncity, 0.9, 2.0), rng, nu)
    user_activity = rng.lognormal(1.0, 0.6, nu)
    item_category = _draw(_zipf_cdf(rng, ncat, 0.8, 2.0), rng, ni)
    item_brand = _draw(_zipf_cdf(rng, nbr, 0.9, 3.0), rng, ni)
    item_shop = _draw(_zipf_cdf(rng, nshop, 0.9, 3.0), rng, ni)
    cat_price_mu = rng.normal(4.0, 0.8, ncat)
    item_log_price = cat_price_mu[item_category] + rng.normal(0.0, 0.5, ni)

    def w(n: int, s: float) -> np.ndarray:
        return rng.normal(0.0, s, n)

    ctr_w = {
        "user_id": w(nu, 0.35), "item_id": w(ni, 0.40), "item_category": w(ncat, 0.30),
        "item_brand": w(nbr, 0.20), "item_shop": w(nshop, 0.15), "user_age_bucket": w(nage, 0.15),
        "user_gender": w(ngen, 0.10), "user_city": w(ncity, 0.10),
        "hour": 0.25 * np.sin(2 * np.pi * (hours - 12) / 24.0) + w(nh, 0.05),
        "device": w(nd, 0.20),
    }
    cvr_w = {
        "user_id": 0.5 * ctr_w["user_id"] + w(nu, 0.30),
        "item_id": 0.3 * ctr_w["item_id"] + w(ni, 0.35),
        "item_category": w(ncat, 0.30), "item_brand": w(nbr, 0.25), "item_shop": w(nshop, 0.25),
        "user_age_bucket": w(nage, 0.15), "user_gender": w(ngen, 0.10), "user_city": w(ncity, 0.10),
        "hour": w(nh, 0.05), "device": w(nd, 0.20),
    }
    k2, s2 = 8, (0.25 / 8) ** 0.25  # <U, V> has std ~0.5
    U, V = rng.normal(0, s2, (nu, k2)), rng.normal(0, s2, (ni, k2))
    U2 = 0.6 * U + 0.8 * rng.normal(0, s2, (nu, k2))
    V2 = 0.6 * V + 0.8 * rng.normal(0, s2, (ni, k2))
    k3, s3 = 4, (0.36 / 4) ** (1 / 6)  # 3-way sum has std ~0.6
    world = World(
        cdf=cdf, user_age=user_age, user_gender=user_gender, user_city=user_city,
        user_activity=user_activity, item_category=item_category, item_brand=item_brand,
        item_shop=item_shop, item_log_price=item_log_price,
        log_price_mean=float(item_log_price.mean()), log_price_std=float(item_log_price.std()),
        log_act_mean=float(np.log(user_activity).mean()), log_act_std=float(np.log(user_activity).std()),
        ctr_w=ctr_w, cvr_w=cvr_w, U=U, V=V, U2=U2, V2=V2,
        cat_age=rng.normal(0, 0.30, (ncat, nage)), hour_device=rng.normal(0, 0.25, (nh, nd)),
        cat_gender=rng.normal(0, 0.30, (ncat, ngen)), shop_age=rng.normal(0, 0.25, (nshop, nage)),
        tri_user=rng.normal(0, s3, (nu, k3)), tri_cat=rng.normal(0, s3, (ncat, k3)),
        tri_hour=rng.normal(0, s3, (nh, k3)), tri2_user=rng.normal(0, s3, (nu, k3)),
        tri2_brand=rng.normal(0, s3, (nbr, k3)), tri2_device=rng.normal(0, s3, (nd, k3)),
    )
    hist_noise = rng.lognormal(0.0, 0.25, ni)
    missing = rng.random(ni) < _MISSING_HIST_ITEM_FRACTION

    # Calibrate the biases on a seed-derived sample (independent of n_rows).
    cal = sample_features(world, np.random.default_rng(np.random.SeedSequence([int(seed), 2])),
                          CALIBRATION_ROWS)
    comp = logit_components(world, cal)
    z_ctr = sum(comp["ctr"].values())
    z_cvr = sum(comp["cvr"].values())
    world.ctr_bias = _solve_bias(z_ctr, TARGET_CTR)
    p_ctr = _sigmoid(np.clip(z_ctr + world.ctr_bias, -LOGIT_CLIP, LOGIT_CLIP))
    world.cvr_bias = _solve_bias(z_cvr, TARGET_CVR_GIVEN_CLICK, weights=p_ctr)

    # Historical item CTR: noisy item-level CTR (no history for ~3% of items -> NaN).
    item_z = (world.ctr_bias + ctr_w["item_id"] + ctr_w["item_category"][item_category]
              + ctr_w["item_brand"][item_brand] + ctr_w["item_shop"][item_shop] - 0.7 * np.log(3.0))
    hist = np.clip(_sigmoid(item_z) * hist_noise, 1e-4, 0.999)
    hist[missing] = np.nan
    world.item_ctr_hist = hist
    return world


@functools.lru_cache(maxsize=8)
def _cached_world(seed: int) -> World:
    """make_world(seed), memoised for repeated generations in one process (never mutated)."""
    return make_world(seed)


def _solve_bias(z: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """Bias b [scalar] with weighted mean of sigmoid(z [N] + b) == target (safeguarded Newton)."""
    wts = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64)
    wts = wts / wts.sum()
    lo, hi = -30.0, 30.0
    b = float(np.log(target / (1.0 - target)) - np.dot(z, wts))
    for _ in range(100):
        p = _sigmoid(np.clip(z + b, -LOGIT_CLIP, LOGIT_CLIP))
        f = float(np.dot(p, wts)) - target
        if abs(f) < 1e-10 * target:
            break
        lo, hi = (b, hi) if f < 0 else (lo, b)
        slope = float(np.dot(p * (1.0 - p), wts))
        step = b - f / slope if slope > 0 else 0.5 * (lo + hi)
        b = step if lo < step < hi else 0.5 * (lo + hi)
    return b


def sample_features(world: World, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw ``n`` impressions: field name -> [n] array (int64 categoricals, float64 numerics).

    Numeric ``item_ctr_hist`` is filled only once the world is calibrated (NaN before).
    """
    user = _draw(world.cdf["user_id"], rng, n)
    item = _draw(world.cdf["item_id"], rng, n)
    hour = _draw(world.cdf["hour"], rng, n)
    device = _draw(world.cdf["device"], rng, n)
    position = _draw(world.cdf["position"], rng, n) + 1
    price = np.exp(world.item_log_price[item] + rng.normal(0.0, 0.1, n))  # promotions
    activity = world.user_activity[user] * rng.lognormal(0.0, 0.2, n)
    hist = world.item_ctr_hist[item] if world.item_ctr_hist is not None else np.full(n, np.nan)
    return {
        "user_id": user, "user_age_bucket": world.user_age[user],
        "user_gender": world.user_gender[user], "user_city": world.user_city[user],
        "item_id": item, "item_category": world.item_category[item],
        "item_brand": world.item_brand[item], "item_shop": world.item_shop[item],
        "hour": hour, "device": device, "position": position,
        "item_price": price, "user_activity": activity, "item_ctr_hist": hist,
    }


def logit_components(world: World, x: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Ground-truth logit pieces, each [n], excluding the biases.

    Returns ``{"ctr": {...}, "cvr": {...}}`` with keys ``first`` (1st-order incl. numerics),
    ``position`` (CTR only), ``second`` (pairwise) and ``higher`` (3-way + thresholded).
    The full logit is ``bias + sum(components)``.
    """
    u, i, c = x["user_id"], x["item_id"], x["item_category"]
    age, gen, h, d = x["user_age_bucket"], x["user_gender"], x["hour"], x["device"]
    zp = (np.log(x["item_price"]) - world.log_price_mean) / world.log_price_std
    za = (np.log(x["user_activity"]) - world.log_act_mean) / world.log_act_std
    expensive = (zp > 0.7).astype(np.float64)
    young = (age <= 1).astype(np.float64)
    old = (age >= 5).astype(np.float64)

    def first(weights: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(u.shape[0], dtype=np.float64)
        for name, wv in weights.items():
            out += wv[x[name]]
        return out

    ctr = {
        "first": first(world.ctr_w) - 0.20 * zp + 0.25 * za,
        "position": -0.7 * np.log(x["position"].astype(np.float64)),
        "second": (np.einsum("nk,nk->n", world.U[u], world.V[i])
                   + world.cat_age[c, age] + world.hour_device[h, d]),
        "higher": (np.einsum("nk,nk,nk->n", world.tri_user[u], world.tri_cat[c], world.tri_hour[h])
                   + expensive * (-1.0 * young + 0.7 * old)),
    }
    cvr = {
        "first": first(world.cvr_w) - 0.45 * zp + 0.15 * za,
        "second": (np.einsum("nk,nk->n", world.U2[u], world.V2[i])
                   + world.cat_gender[c, gen] + world.shop_age[x["item_shop"], age]),
        "higher": (np.einsum("nk,nk,nk->n", world.tri2_user[u], world.tri2_brand[x["item_brand"]],
                             world.tri2_device[d])
                   - 1.0 * expensive * (za < -0.5)),
    }
    return {"ctr": ctr, "cvr": cvr}


def generate_block(world: World, seed: int, block_index: int, n: int) -> pa.Table:
    """Rows of block ``block_index`` (its RNG: SeedSequence([seed, 1, block_index])) as a
    pyarrow Table [n rows x (features + click, conversion, true_pctr, true_pcvr)]."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(block_index)]))
    x = sample_features(world, rng, n)
    comp = logit_components(world, x)
    p_ctr = _sigmoid(np.clip(world.ctr_bias + sum(comp["ctr"].values()), -LOGIT_CLIP, LOGIT_CLIP))
    p_cvr = _sigmoid(np.clip(world.cvr_bias + sum(comp["cvr"].values()), -LOGIT_CLIP, LOGIT_CLIP))
    p_ctr32, p_cvr32 = p_ctr.astype(np.float32), p_cvr.astype(np.float32)
    click = rng.random(n) < p_ctr32
    conversion = click & (rng.random(n) < p_cvr32)
    cols: dict[str, np.ndarray] = {name: x[name].astype(np.int32) for name, _ in CATEGORICAL_FIELDS}
    cols.update({name: x[name].astype(np.float32) for name, _, _ in NUMERIC_FIELDS})
    cols["click"], cols["conversion"] = click.astype(np.int8), conversion.astype(np.int8)
    cols["true_pctr"], cols["true_pcvr"] = p_ctr32, p_cvr32
    return pa.Table.from_arrays([pa.array(cols[f.name]) for f in _arrow_schema()], schema=_arrow_schema())


class _SplitWriter:
    """Buffers blocks of one split and writes them every >= ``chunk_rows`` rows."""

    def __init__(self, path: Path, fmt: str, chunk_rows: int) -> None:
        self.path, self.fmt, self.chunk_rows = path, fmt, chunk_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0
        self.clicks = 0
        self.conversions = 0
        self.sum_pctr = 0.0
        self.sum_pcvr = 0.0
        schema = _arrow_schema()
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.writer: Any = pq.ParquetWriter(path, schema)
        else:
            import pyarrow.csv as pacsv

            self.sink = open(path, "wb")  # header unquoted, written by hand
            self.sink.write((",".join(schema.names) + "\n").encode())
            self.writer = pacsv.CSVWriter(
                self.sink, schema, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"))

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        self.clicks += int(np.asarray(table["click"]).sum())
        self.conversions += int(np.asarray(table["conversion"]).sum())
        self.sum_pctr += float(np.asarray(table["true_pctr"], dtype=np.float64).sum())
        self.sum_pcvr += float(np.asarray(table["true_pcvr"], dtype=np.float64).sum())
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        if self.fmt == "parquet":
            self.writer.write_table(table, row_group_size=self.chunk_rows)
        else:  # NaN -> empty cell, the most portable CSV spelling of a missing value
            import pyarrow.compute as pc

            for j, f in enumerate(table.schema):
                if pa.types.is_floating(f.type):
                    col = table.column(j)
                    table = table.set_column(j, f, pc.if_else(pc.is_nan(col), pa.scalar(None, f.type), col))
            self.writer.write_table(table)

    def close(self) -> None:
        self.flush()
        self.writer.close()
        if self.fmt == "csv":
            self.sink.close()


def _split_sizes(n_rows: int, splits: Sequence[float]) -> tuple[int, int, int]:
    if len(splits) != 3 or any(s < 0 for s in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(f"splits must be 3 non-negative fractions summing to 1, got {splits!r}")
    n_train = int(round(n_rows * splits[0]))
    n_valid = min(int(round(n_rows * splits[1])), n_rows - n_train)
    return n_train, n_valid, n_rows - n_train - n_valid


def schema_yaml(name: str, files: dict[str, str]) -> str:
    """The simulated dataset's schema in the library's schema-YAML format (text)."""
    lines = [f"name: {name}",
             "files: {" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}",
             "fields:"]
    for fname, _ in CATEGORICAL_FIELDS:
        lines.append(f"  - {{name: {fname}, type: categorical}}")
    for fname, norm, fill in NUMERIC_FIELDS:
        extra = "" if fill is None else f", fill_na: {fill}"
        lines.append(f"  - {{name: {fname}, type: numeric, norm: {norm}{extra}}}")
    lines += ["tasks:",
              "  - {name: ctr, label: click}",
              '  - {name: cvr, label: conversion, "on": ctr}',
              ""]
    return "\n".join(lines)


def simulate_funnel(
    out_dir: str | os.PathLike[str],
    n_rows: int = 200_000,
    seed: int = 7,
    chunk_rows: int = 1_000_000,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    format: Literal["csv", "parquet"] = "parquet",
) -> Path:
    """Generate ``n_rows`` impressions into ``out_dir`` and return it.

    Writes ``{train,valid,test}.{parquet|csv}`` (contiguous row ranges of the sizes given by
    ``splits``; columns: the 11 categorical + 3 numeric features, ``click``, ``conversion``,
    ``true_pctr``, ``true_pcvr``), ``schema.yaml`` (features and ctr/cvr tasks) and
    ``meta.json``.  Content depends only on (n_rows, seed, splits); ``chunk_rows`` only sets
    the write granularity / memory bound.
    """
    if format not in ("csv", "parquet"):
        raise ValueError(f"format must be 'csv' or 'parquet', got {format!r}")
    if n_rows < 1 or chunk_rows < 1:
        raise ValueError("n_rows and chunk_rows must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = _split_sizes(n_rows, splits)
    bounds = np.cumsum((0,) + sizes)
    world = _cached_world(int(seed))
    files = {s: f"{s}.{format}" for s in SPLIT_NAMES}
    writers = [_SplitWriter(out / files[s], format, chunk_rows) for s in SPLIT_NAMES]
    try:
        for b, start in enumerate(range(0, n_rows, BLOCK_ROWS)):
            n = min(BLOCK_ROWS, n_rows - start)
            table = generate_block(world, seed, b, n)
            for k, writer in enumerate(writers):  # slice the block across the splits
                lo, hi = max(start, bounds[k]), min(start + n, bounds[k + 1])
                if hi > lo:
                    writer.write(table.slice(lo - start, hi - lo))
    finally:
        for writer in writers:
            writer.close()

    (out / "schema.yaml").write_text(schema_yaml("sim_funnel", files))
    tot = {k: sum(getattr(w, k) for w in writers) for k in ("rows", "clicks", "conversions", "sum_pctr", "sum_pcvr")}

    def rates(r: dict[str, float]) -> dict[str, float]:
        rows = max(r["rows"], 1)
        return {"click_rate": r["clicks"] / rows, "conversion_rate": r["conversions"] / rows,
                "cvr_given_click": r["conversions"] / max(r["clicks"], 1),
                "mean_true_pctr": r["sum_pctr"] / rows, "mean_true_pcvr": r["sum_pcvr"] / rows}

    meta = {
        "generator_version": GENERATOR_VERSION, "n_rows": n_rows, "seed": seed,
        "splits": list(splits), "format": format, "block_rows": BLOCK_ROWS,
        "rows": {s: w.rows for s, w in zip(SPLIT_NAMES, writers)},
        **rates(tot),
        "per_split": {s: rates({k: getattr(w, k) for k in tot}) for s, w in zip(SPLIT_NAMES, writers)},
        "ctr_bias": world.ctr_bias, "cvr_bias": world.cvr_bias,
        "features": [n for n, _ in CATEGORICAL_FIELDS] + [n for n, _, _ in NUMERIC_FIELDS],
        "truth_columns": list(TRUTH_COLUMNS),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks completion
    return out


def simulation_key(n_rows: int, seed: int, **kw: Any) -> str:
    """Cache key (16 hex chars) of a simulated dataset: generator version + content parameters."""
    params = {"version": GENERATOR_VERSION, "block_rows": BLOCK_ROWS, "n_rows": int(n_rows),
              "seed": int(seed), "splits": [float(s) for s in kw.get("splits", (0.8, 0.1, 0.1))],
              "format": kw.get("format", "parquet")}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def ensure_simulated(cache_dir: str | os.PathLike[str], n_rows: int = 200_000, seed: int = 7, **kw: Any) -> Path:
    """Return ``cache_dir/sim-<key>``, generating it once (``kw``: simulate_funnel's
    ``splits``, ``format``, ``chunk_rows``).  Generation goes to a temporary folder inside
    ``cache_dir`` that is then renamed into place atomically; a concurrent winner is reused."""
    unknown = set(kw) - {"splits", "format", "chunk_rows"}
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}")
    cache = Path(cache_dir)
    final = cache / f"sim-{simulation_key(n_rows, seed, **kw)}"
    if (final / "meta.json").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache))
    try:
        simulate_funnel(tmp, n_rows=n_rows, seed=seed, **kw)
        if final.exists() and not (final / "meta.json").is_file():
            shutil.rmtree(final)  # leftover of an interrupted non-atomic writer
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent winner
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
