"""Deterministic ad-funnel simulator: Ali-CCP-like impressions with planted CTR/CVR ground truth.

The simulator draws a *world* (popularity distributions, per-value latent vectors and
weights) from ``seed`` alone, then generates impressions in fixed-size blocks of
``BLOCK_ROWS`` rows, block ``b`` using its own RNG seeded by ``(seed, b)``.  Rows
therefore depend only on ``(n_rows, seed)`` (and ``splits`` for which file they land
in), never on ``chunk_rows``, which only sets how many rows are buffered before a
write (Parquet row-group size).  At most ``max(chunk_rows, BLOCK_ROWS) + BLOCK_ROWS``
rows are ever held in memory, so tens of millions of rows stream fine.  Two generator
versions exist (``version=1`` is the default; a version's rows never change):

Version 1 (``funnel-sim-1``).  Ground truth (all terms indexed by the impression's feature values)::

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

Version 2 (``funnel-sim-2``) = version 1's world and terms plus behaviour histories and
selection bias (its own biases are calibrated the same way; rows differ from version 1's).

*Interest model.*  Each user has K in {1, 2, 3, 4} interest categories (P = .2, .35, .3, .15;
distinct, drawn by category popularity) with Dirichlet(1) weights: a sparse, multi-modal
mixture, so the mean of a user's history is a blur of several interests.  Each user owns an
endless stream of past clicks, a pure function of (world, user, position j): the stream runs in
sessions of ``SESSION_LEN`` clicks; each session picks one interest by its weight, and each
click is an item of that interest's category (by the square root of item popularity), or with
P = ``EXPLORE`` any item by global popularity.  The impression at global row r of user u has seen
``h = n0[u] + floor(rate[u] * r)`` stream clicks (rate: the user's expected clicks per logged
row = its impression share x TARGET_CTR; n0: pre-log length, 0 for ``NEW_USER_FRACTION`` of the
users, else 1 + floor(LogNormal(log 10, 1) + rate * PRE_LOG_ROWS), so frequent users start with
full histories and light ones with short ones), and its history is the window of stream
positions [h - L, h), L = min(h, 30): ``hist_items`` (oldest first, most recent last) and
``hist_cats`` (their categories), each a "|"-joined cell, empty for a user with no past click.
Half of the candidates come from the user's interests (a category by interest weight, then an
item of it as in the stream), the others by global item popularity as in version 1.

*History terms.*  Every item has a unit taste vector T[i] in R^8 = normalize(mu[category] +
0.32 eps) (same-category items have cosine about 0.5 with a wide spread, others about 0).
With s_l = <T[hist_l], T[item]> over the L history items (both terms 0 for an empty history)::

    mean part    S = (1/L) sum_l s_l = <mean_l T[hist_l], T[item]>
    target part  A = 1 - exp(-M / 1.5),  M = sum_l max(s_l - 0.6, 0) / 0.4
    logit_ctr += 1.2 S + 1.5 A        logit_cvr += 0.6 S + 1.0 A

S is bilinear in the history's mean embedding and the candidate's: mean pooling followed by any
interaction with the candidate field represents it exactly (hist_cats' mean, the share of each
category in the history, carries most of it too, as taste vectors cluster by category).
A is a saturating soft count of history items *very* similar to this candidate: it depends on
each item's own similarity to the target (thresholded before pooling), and on the count, not
the share; a mean-pooled vector of a multi-interest history averages the close items with the
far ones and drops the length, so it can only approximate A; target attention (DIN: a weight per
history item computed from that item and the candidate, no softmax) represents it directly.
No-history models see the user only through user_id (the long-run interests of frequent
users), not the current window.  Expected ranking against the stored truth: no history <
mean pooling < target attention.

*Selection bias.*  15% of items are "clickbait" (q = +|N(0, 1)|), 15% "niche" (q = -|N(0, 1)|),
the rest q = 0; 20% of users are "impulsive" (r = +|N(0, 1)|, else 0)::

    logit_ctr += 0.8 q[item] + 0.5 r[user]        logit_cvr += -1.0 q[item] - 0.6 r[user]

so clicks over-sample clickbait items and impulsive users, which convert less, and under-sample
niche items, which convert more: clicked rows are not representative of all impressions (the
other terms still correlate CTR and CVR positively overall), and a CVR model fitted on clicked
rows alone sees least of the impressions where conversion differs most.  ``item_ctr_hist``
includes the clickbait term.  The biases are calibrated on rows 0 .. CALIBRATION_ROWS - 1.

*Labels.*  ``cvr_entire ~ Bernoulli(pCVR)`` is drawn once for EVERY impression from the block's
own RNG (so it is fixed by (seed, row), the same for every run on these files) and
``conversion = click * cvr_entire``: on unclicked rows ``cvr_entire`` is the counterfactual
"would have converted if clicked" label that entire-space CVR metrics score against.

Files of version 2: version 1's columns plus ``hist_items``, ``hist_cats`` (after the numeric
features) and ``cvr_entire``; ``schema.yaml`` (sequence fields mean-pooled, sharing the
item_id / item_category vocabularies), ``schema_attention.yaml`` (the same with attention
pooling, targets item_id / item_category) and ``schema_nohist.yaml`` (no sequence field).
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
import pyarrow.compute as pc

GENERATOR_VERSIONS: dict[int, str] = {1: "funnel-sim-1", 2: "funnel-sim-2"}
GENERATOR_VERSION = GENERATOR_VERSIONS[1]  # the default version
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

# Version 2: (sequence column, the categorical field whose vocabulary it shares) and the
# stored counterfactual conversion label.
SEQUENCE_FIELDS: tuple[tuple[str, str], ...] = (("hist_items", "item_id"), ("hist_cats", "item_category"))
CVR_ENTIRE_COLUMN = "cvr_entire"
HIST_MAX_LEN = 30
SEQUENCE_SEPARATOR = "|"
SESSION_LEN = 5  # consecutive stream clicks that share one interest
EXPLORE = 0.15  # share of stream clicks outside the user's interests
INTEREST_CANDIDATE = 0.5  # share of candidates drawn from the user's interests
NEW_USER_FRACTION = 0.12  # users without any pre-log click
PRE_LOG_ROWS = 1_000_000  # other users' streams ran this many rows' worth of clicks before the log
TASTE_DIM = 8
TASTE_NOISE = 0.32
SIM_THRESHOLD = 0.6  # s_l above it counts toward the target part
SAT_SCALE = 1.5
HISTORY_WEIGHTS = {"ctr": (1.2, 1.5), "cvr": (0.6, 1.0)}  # (mean part S, target part A)
SELECTION_WEIGHTS = {"ctr": (0.8, 0.5), "cvr": (-1.0, -0.6)}  # (clickbait q[item], impulsive r[user])

_CARD = dict(CATEGORICAL_FIELDS)
_MISSING_HIST_ITEM_FRACTION = 0.03


def _arrow_schema(version: int = 1) -> pa.Schema:
    cols = [pa.field(name, pa.int32()) for name, _ in CATEGORICAL_FIELDS]
    cols += [pa.field(name, pa.float32()) for name, _, _ in NUMERIC_FIELDS]
    if version == 2:
        cols += [pa.field(name, pa.string()) for name, _ in SEQUENCE_FIELDS]
    cols += [pa.field(name, pa.int8()) for name in LABEL_COLUMNS]
    cols += [pa.field(name, pa.float32()) for name in TRUTH_COLUMNS]
    if version == 2:
        cols.append(pa.field(CVR_ENTIRE_COLUMN, pa.int8()))
    return pa.schema(cols)


def _check_version(version: int) -> int:
    if version not in GENERATOR_VERSIONS:
        raise ValueError(f"simulator version must be one of {sorted(GENERATOR_VERSIONS)}, got {version!r}")
    return int(version)


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
class HistoryWorld:
    """Version 2's interest model and selection-bias factors (see the module docstring).

    interest_cats [N_user, 4]: interest categories (unused slots repeat the first);
    interest_cum [N_user, 4]: cumulative interest weights, 2.0 from the last used slot on;
    n0 [N_user]: pre-log stream length; rate [N_user]: stream clicks per logged row;
    session_offset [N_user]: phase of the user's sessions in the stream;
    cat_key / cat_items [N_item]: items sorted by category, key = category + CDF within it;
    cat_end [N_cat]: one past each category's last position in that order;
    taste [N_item, TASTE_DIM] float32 unit vectors; clickbait [N_item]; impulsive [N_user];
    salt: seeds the stream hash.
    """

    interest_cats: np.ndarray
    interest_cum: np.ndarray
    n0: np.ndarray
    rate: np.ndarray
    session_offset: np.ndarray
    cat_key: np.ndarray
    cat_items: np.ndarray
    cat_end: np.ndarray
    taste: np.ndarray
    clickbait: np.ndarray
    impulsive: np.ndarray
    salt: int


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
    history: HistoryWorld | None = None  # version 2 only

    @property
    def version(self) -> int:
        return 1 if self.history is None else 2


def make_world(seed: int, version: int = 1) -> World:
    """Draw the world of generator ``version`` for ``seed`` and calibrate the two biases
    (deterministic in both; version 2 adds `HistoryWorld` from its own RNG stream)."""
    _check_version(version)
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
    if version == 2:
        world.history = _make_history_world(np.random.default_rng(np.random.SeedSequence([int(seed), 3])), world)

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
    if world.history is not None:
        item_z = item_z + SELECTION_WEIGHTS["ctr"][0] * world.history.clickbait
    hist = np.clip(_sigmoid(item_z) * hist_noise, 1e-4, 0.999)
    hist[missing] = np.nan
    world.item_ctr_hist = hist
    return world


def _make_history_world(rng: np.random.Generator, world: World) -> HistoryWorld:
    """Version 2's interest model and selection-bias factors for ``world`` (from ``rng`` alone)."""
    nu, ni, ncat = _CARD["user_id"], _CARD["item_id"], _CARD["item_category"]
    item_p = np.diff(world.cdf["item_id"], prepend=0.0)
    user_p = np.diff(world.cdf["user_id"], prepend=0.0)
    cat_pop = np.bincount(world.item_category, weights=item_p, minlength=ncat)
    within_p = np.sqrt(item_p)  # flatter than global popularity: histories repeat items less
    within_tot = np.bincount(world.item_category, weights=within_p, minlength=ncat)
    # K distinct interests per user by category popularity (Gumbel top-k; empty categories never)
    with np.errstate(divide="ignore"):
        keys = np.log(cat_pop)[None, :] + rng.gumbel(size=(nu, ncat))
    top = np.argsort(-keys, axis=1)[:, :4]
    k = _draw(np.cumsum([0.2, 0.35, 0.3, 0.15]), rng, nu) + 1
    used = np.arange(4)[None, :] < k[:, None]
    weights = np.where(used, rng.gamma(1.0, size=(nu, 4)), 0.0)  # Dirichlet(1) over the used slots
    cum = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
    cum[np.arange(4)[None, :] >= (k - 1)[:, None]] = 2.0  # the last used slot takes the rest
    interest_cats = np.where(used, top, top[:, :1])
    rate = user_p * TARGET_CTR
    n0 = np.where(rng.random(nu) < NEW_USER_FRACTION, 0,
                  1 + np.floor(rng.lognormal(np.log(10.0), 1.0, nu) + rate * PRE_LOG_ROWS)).astype(np.int64)
    # items sorted by category; key = category + CDF within it (last item of a category: exactly c + 1)
    order = np.lexsort((rng.random(ni), world.item_category))
    cats = world.item_category[order]
    cs = np.cumsum(within_p[order])
    cat_end = np.searchsorted(cats, np.arange(ncat), side="right")
    starts = np.concatenate([[0], cat_end[:-1]])
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0.0)
    within = (cs - before[cats]) / np.maximum(within_tot[cats], 1e-300)
    within[cat_end[cat_end > 0] - 1] = 1.0
    mu = rng.normal(size=(ncat, TASTE_DIM))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    taste = mu[world.item_category] + rng.normal(0.0, TASTE_NOISE, (ni, TASTE_DIM))
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)
    kind = rng.random(ni)
    size = np.abs(rng.normal(size=ni))
    clickbait = np.where(kind < 0.15, size, np.where(kind < 0.30, -size, 0.0))
    impulsive = np.where(rng.random(nu) < 0.2, np.abs(rng.normal(size=nu)), 0.0)
    return HistoryWorld(
        interest_cats=interest_cats.astype(np.int64), interest_cum=cum, n0=n0,
        rate=rate, session_offset=rng.integers(0, SESSION_LEN, nu),
        cat_key=cats + within, cat_items=order.astype(np.int64), cat_end=cat_end.astype(np.int64),
        taste=taste.astype(np.float32), clickbait=clickbait, impulsive=impulsive,
        salt=int(rng.integers(0, 2**62)))


@functools.lru_cache(maxsize=8)
def _cached_world(seed: int, version: int = 1) -> World:
    """make_world(seed, version), memoised for repeated generations in one process (never mutated)."""
    return make_world(seed, version)


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


def sample_features(world: World, rng: np.random.Generator, n: int, first_row: int = 0) -> dict[str, np.ndarray]:
    """Draw ``n`` impressions: field name -> [n] array (int64 categoricals, float64 numerics).

    Numeric ``item_ctr_hist`` is filled only once the world is calibrated (NaN before).
    Version 2 also returns ``hist_items`` / ``hist_cats`` [n, HIST_MAX_LEN] int64 (oldest first,
    -1 padding at the end) of the rows ``first_row .. first_row + n - 1`` (global row indices).
    """
    user = _draw(world.cdf["user_id"], rng, n)
    item = _draw(world.cdf["item_id"], rng, n)
    if world.history is not None:
        from_interest = rng.random(n) < INTEREST_CANDIDATE
        interest_item = _interest_items(world.history, user, rng.random(n), rng.random(n))
        item = np.where(from_interest, interest_item, item)
    hour = _draw(world.cdf["hour"], rng, n)
    device = _draw(world.cdf["device"], rng, n)
    position = _draw(world.cdf["position"], rng, n) + 1
    price = np.exp(world.item_log_price[item] + rng.normal(0.0, 0.1, n))  # promotions
    activity = world.user_activity[user] * rng.lognormal(0.0, 0.2, n)
    hist = world.item_ctr_hist[item] if world.item_ctr_hist is not None else np.full(n, np.nan)
    x = {
        "user_id": user, "user_age_bucket": world.user_age[user],
        "user_gender": world.user_gender[user], "user_city": world.user_city[user],
        "item_id": item, "item_category": world.item_category[item],
        "item_brand": world.item_brand[item], "item_shop": world.item_shop[item],
        "hour": hour, "device": device, "position": position,
        "item_price": price, "user_activity": activity, "item_ctr_hist": hist,
    }
    if world.history is not None:
        items = user_histories(world, user, first_row + np.arange(n, dtype=np.int64))
        x["hist_items"] = items
        x["hist_cats"] = np.where(items >= 0, world.item_category[np.maximum(items, 0)], -1)
    return x


def _hash_unit(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """[0, 1) float64 of the same shape as a, b (int64, broadcast): splitmix64 of (a, b, salt)."""
    def mix(z: np.ndarray) -> np.ndarray:
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        z = mix(np.asarray(a).astype(np.uint64) + np.uint64(salt % 2**64) + np.uint64(0x9E3779B97F4A7C15))
        z = mix(z ^ (np.asarray(b).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _interest_items(hw: HistoryWorld, user: np.ndarray, u_interest: np.ndarray, u_item: np.ndarray) -> np.ndarray:
    """Items (any shape, as the [0, 1) uniforms) of one of each user's interests: the interest by
    its weight (u_interest), then an item of its category by sqrt popularity (u_item)."""
    slot = (u_interest[..., None] >= hw.interest_cum[user]).sum(-1)
    cat = np.take_along_axis(hw.interest_cats[user], slot[..., None], -1)[..., 0]
    idx = np.minimum(np.searchsorted(hw.cat_key, cat + u_item, side="right"), hw.cat_end[cat] - 1)
    return hw.cat_items[idx]


def user_histories(world: World, user: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """History items [n, HIST_MAX_LEN] int64 of impressions of ``user`` [n] at global ``rows`` [n]:
    the user's stream positions [h - L, h) with h = n0 + floor(rate * row), L = min(h, HIST_MAX_LEN),
    oldest first, -1 padding at the end.  A pure function of (world, user, row): no state."""
    hw = world.history
    assert hw is not None, "user_histories needs a version-2 world"
    h = hw.n0[user] + np.floor(hw.rate[user] * rows).astype(np.int64)
    length = np.minimum(h, HIST_MAX_LEN)
    r, c = np.nonzero(np.arange(HIST_MAX_LEN)[None, :] < length[:, None])  # filled slots, row-major
    users, pos = user[r], h[r] - length[r] + c  # stream position of each filled slot
    explore = _hash_unit(users, pos, hw.salt + 2) < EXPLORE
    items = np.empty(r.shape[0], dtype=np.int64)
    u_any = _hash_unit(users[explore], pos[explore], hw.salt + 3)
    items[explore] = np.minimum(np.searchsorted(world.cdf["item_id"], u_any, side="right"),
                                world.cdf["item_id"].shape[0] - 1)
    users, pos = users[~explore], pos[~explore]
    session = (pos + hw.session_offset[users]) // SESSION_LEN
    items[~explore] = _interest_items(hw, users, _hash_unit(users, session, hw.salt),
                                      _hash_unit(users, pos, hw.salt + 1))
    out = np.full((user.shape[0], HIST_MAX_LEN), -1, dtype=np.int64)
    out[r, c] = items
    return out


def logit_components(world: World, x: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Ground-truth logit pieces, each [n], excluding the biases.

    Returns ``{"ctr": {...}, "cvr": {...}}`` with keys ``first`` (1st-order incl. numerics),
    ``position`` (CTR only), ``second`` (pairwise) and ``higher`` (3-way + thresholded); version 2
    adds ``history_mean`` (w·S), ``history_target`` (w·A) and ``selection`` (clickbait / impulsive).
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
    hw = world.history
    if hw is not None:
        mean_part, target_part = history_terms(world, x)
        for name, comp in (("ctr", ctr), ("cvr", cvr)):
            w_mean, w_target = HISTORY_WEIGHTS[name]
            w_bait, w_impulse = SELECTION_WEIGHTS[name]
            comp["history_mean"] = w_mean * mean_part
            comp["history_target"] = w_target * target_part
            comp["selection"] = w_bait * hw.clickbait[i] + w_impulse * hw.impulsive[u]
    return {"ctr": ctr, "cvr": cvr}


def history_terms(world: World, x: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Version 2's (S, A), each [n] float64 (module docstring): S = mean similarity of the history
    items to the candidate, A = 1 - exp(-M / SAT_SCALE) of the thresholded soft count M."""
    assert world.history is not None, "history_terms needs a version-2 world"
    taste = world.history.taste
    items = x["hist_items"]
    valid = items >= 0
    sim = np.einsum("nld,nd->nl", taste[np.maximum(items, 0)], taste[x["item_id"]]).astype(np.float64)
    sim = np.where(valid, sim, 0.0)
    length = valid.sum(1)
    mean_part = sim.sum(1) / np.maximum(length, 1)
    soft_count = (np.maximum(sim - SIM_THRESHOLD, 0.0) / (1.0 - SIM_THRESHOLD)).sum(1)
    return mean_part, 1.0 - np.exp(-soft_count / SAT_SCALE)


def _join_sequences(values: np.ndarray) -> pa.Array:
    """[n, L] int64 ids with -1 padding at the end -> [n] strings "a|b|c" ("" when empty)."""
    valid = values >= 0
    offsets = np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid].astype(np.int32)))
    return pc.binary_join(lists.cast(pa.list_(pa.string())), SEQUENCE_SEPARATOR)


def generate_block(world: World, seed: int, block_index: int, n: int) -> pa.Table:
    """Rows of block ``block_index`` (its RNG: SeedSequence([seed, 1, block_index])) as a
    pyarrow Table [n rows x (features + click, conversion, true_pctr, true_pcvr)]; version 2 also
    has the two sequence columns and cvr_entire (see `_arrow_schema`)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(block_index)]))
    x = sample_features(world, rng, n, first_row=block_index * BLOCK_ROWS)
    comp = logit_components(world, x)
    p_ctr = _sigmoid(np.clip(world.ctr_bias + sum(comp["ctr"].values()), -LOGIT_CLIP, LOGIT_CLIP))
    p_cvr = _sigmoid(np.clip(world.cvr_bias + sum(comp["cvr"].values()), -LOGIT_CLIP, LOGIT_CLIP))
    p_ctr32, p_cvr32 = p_ctr.astype(np.float32), p_cvr.astype(np.float32)
    click = rng.random(n) < p_ctr32
    would_convert = rng.random(n) < p_cvr32  # drawn for every row: version 2 stores it as cvr_entire
    conversion = click & would_convert
    cols: dict[str, Any] = {name: x[name].astype(np.int32) for name, _ in CATEGORICAL_FIELDS}
    cols.update({name: x[name].astype(np.float32) for name, _, _ in NUMERIC_FIELDS})
    cols["click"], cols["conversion"] = click.astype(np.int8), conversion.astype(np.int8)
    cols["true_pctr"], cols["true_pcvr"] = p_ctr32, p_cvr32
    if world.history is not None:
        cols.update({name: _join_sequences(x[name]) for name, _ in SEQUENCE_FIELDS})
        cols[CVR_ENTIRE_COLUMN] = would_convert.astype(np.int8)
    schema = _arrow_schema(world.version)
    return pa.Table.from_arrays([pa.array(cols[f.name]) for f in schema], schema=schema)


class _SplitWriter:
    """Buffers blocks of one split and writes them every >= ``chunk_rows`` rows."""

    def __init__(self, path: Path, fmt: str, chunk_rows: int, schema: pa.Schema) -> None:
        self.path, self.fmt, self.chunk_rows = path, fmt, chunk_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0
        self.clicks = 0
        self.conversions = 0
        self.sum_pctr = 0.0
        self.sum_pcvr = 0.0
        # version 2 only: counterfactual conversions, history values, empty histories
        self.cvr_entire = 0
        self.hist_values = 0
        self.empty_hist = 0
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
        if CVR_ENTIRE_COLUMN in table.column_names:
            self.cvr_entire += int(np.asarray(table[CVR_ENTIRE_COLUMN]).sum())
            hist = table[SEQUENCE_FIELDS[0][0]]
            nonempty = pc.greater(pc.binary_length(hist), 0)
            seps = pc.count_substring(hist, SEQUENCE_SEPARATOR)
            self.hist_values += int(pc.sum(pc.add(seps, pc.cast(nonempty, pa.int32()))).as_py() or 0)
            self.empty_hist += table.num_rows - int(pc.sum(nonempty).as_py() or 0)
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


# Version 2's schema files: file name -> sequence pooling (None: no sequence field).
SCHEMA_VARIANTS: dict[str, str | None] = {
    "schema.yaml": "mean", "schema_attention.yaml": "attention", "schema_nohist.yaml": None}


def schema_yaml(name: str, files: dict[str, str], pooling: str | None = None) -> str:
    """The simulated dataset's schema in the library's schema-YAML format (text); with ``pooling``
    (mean | sum | max | attention) it also declares version 2's sequence fields, each sharing its
    categorical field's vocabulary (and, with attention, targeting that field)."""
    lines = [f"name: {name}",
             "files: {" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}",
             "fields:"]
    for fname, _ in CATEGORICAL_FIELDS:
        lines.append(f"  - {{name: {fname}, type: categorical}}")
    for fname, norm, fill in NUMERIC_FIELDS:
        extra = "" if fill is None else f", fill_na: {fill}"
        lines.append(f"  - {{name: {fname}, type: numeric, norm: {norm}{extra}}}")
    for fname, owner in SEQUENCE_FIELDS if pooling else ():
        target = f", target: {owner}" if pooling == "attention" else ""
        lines.append(f'  - {{name: {fname}, type: sequence, separator: "{SEQUENCE_SEPARATOR}", '
                     f"max_len: {HIST_MAX_LEN}, share_embedding: {owner}, pooling: {pooling}{target}}}")
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
    version: int = 1,
) -> Path:
    """Generate ``n_rows`` impressions of generator ``version`` into ``out_dir`` and return it.

    Writes ``{train,valid,test}.{parquet|csv}`` (contiguous row ranges of the sizes given by
    ``splits``; columns: the 11 categorical + 3 numeric features, ``click``, ``conversion``,
    ``true_pctr``, ``true_pcvr``; version 2 adds ``hist_items``, ``hist_cats``, ``cvr_entire``),
    ``schema.yaml`` (features and ctr/cvr tasks; version 2 also ``schema_attention.yaml`` and
    ``schema_nohist.yaml``, see SCHEMA_VARIANTS) and ``meta.json``.  Content depends only on
    (version, n_rows, seed, splits); ``chunk_rows`` only sets the write granularity / memory bound.
    """
    version = _check_version(version)
    if format not in ("csv", "parquet"):
        raise ValueError(f"format must be 'csv' or 'parquet', got {format!r}")
    if n_rows < 1 or chunk_rows < 1:
        raise ValueError("n_rows and chunk_rows must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = _split_sizes(n_rows, splits)
    bounds = np.cumsum((0,) + sizes)
    world = _cached_world(int(seed), version)
    files = {s: f"{s}.{format}" for s in SPLIT_NAMES}
    writers = [_SplitWriter(out / files[s], format, chunk_rows, _arrow_schema(version)) for s in SPLIT_NAMES]
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

    if version == 1:
        (out / "schema.yaml").write_text(schema_yaml("sim_funnel", files))
    else:
        for schema_name, pooling in SCHEMA_VARIANTS.items():
            (out / schema_name).write_text(schema_yaml("sim_funnel_v2", files, pooling))
    counts = ("rows", "clicks", "conversions", "sum_pctr", "sum_pcvr")
    if version == 2:
        counts += ("cvr_entire", "hist_values", "empty_hist")
    tot = {k: sum(getattr(w, k) for w in writers) for k in counts}

    def rates(r: dict[str, float]) -> dict[str, float]:
        rows = max(r["rows"], 1)
        out = {"click_rate": r["clicks"] / rows, "conversion_rate": r["conversions"] / rows,
               "cvr_given_click": r["conversions"] / max(r["clicks"], 1),
               "mean_true_pctr": r["sum_pctr"] / rows, "mean_true_pcvr": r["sum_pcvr"] / rows}
        if version == 2:
            out.update({"cvr_entire_rate": r["cvr_entire"] / rows, "mean_hist_len": r["hist_values"] / rows,
                        "empty_hist_rate": r["empty_hist"] / rows})
        return out

    meta = {
        "generator_version": GENERATOR_VERSIONS[version], "n_rows": n_rows, "seed": seed,
        "splits": list(splits), "format": format, "block_rows": BLOCK_ROWS,
        "rows": {s: w.rows for s, w in zip(SPLIT_NAMES, writers)},
        **rates(tot),
        "per_split": {s: rates({k: getattr(w, k) for k in tot}) for s, w in zip(SPLIT_NAMES, writers)},
        "ctr_bias": world.ctr_bias, "cvr_bias": world.cvr_bias,
        "features": [n for n, _ in CATEGORICAL_FIELDS] + [n for n, _, _ in NUMERIC_FIELDS],
        "truth_columns": list(TRUTH_COLUMNS),
    }
    if version == 2:
        meta["features"] += [n for n, _ in SEQUENCE_FIELDS]
        meta["truth_columns"].append(CVR_ENTIRE_COLUMN)
        meta["hist_max_len"] = HIST_MAX_LEN
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks completion
    return out


def simulation_key(n_rows: int, seed: int, **kw: Any) -> str:
    """Cache key (16 hex chars) of a simulated dataset: generator version (``kw["version"]``,
    default 1) + content parameters."""
    params = {"version": GENERATOR_VERSIONS[_check_version(kw.get("version", 1))],
              "block_rows": BLOCK_ROWS, "n_rows": int(n_rows),
              "seed": int(seed), "splits": [float(s) for s in kw.get("splits", (0.8, 0.1, 0.1))],
              "format": kw.get("format", "parquet")}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def ensure_simulated(cache_dir: str | os.PathLike[str], n_rows: int = 200_000, seed: int = 7, **kw: Any) -> Path:
    """Return ``cache_dir/sim-<key>``, generating it once (``kw``: simulate_funnel's
    ``splits``, ``format``, ``chunk_rows``, ``version``).  Generation goes to a temporary folder
    inside ``cache_dir`` that is then renamed into place atomically; a concurrent winner is reused."""
    unknown = set(kw) - {"splits", "format", "chunk_rows", "version"}
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
