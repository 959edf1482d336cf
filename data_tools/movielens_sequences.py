"""Build a DIN-style behaviour-sequence dataset from the raw MovieLens-100K files.

Input (``--raw DIR``): RecBole's atomic files, tab-separated, header ``name:type``:
``ml-100k.inter`` (user_id, item_id, rating, timestamp), ``ml-100k.item`` (item_id,
movie_title, release_year, class = space-separated genres), ``ml-100k.user`` (user_id, age,
gender, occupation, zip_code).

Output (``--out DIR``): ``train.csv``, ``valid.csv``, ``test.csv``, one row per rating, each
file in time order (timestamp, then user id, then item id); ``schema.yaml`` (histories
attention-pooled), ``schema_mean.yaml`` (the same, mean-pooled), ``schema_nohist.yaml`` (no
history field) and ``meta.json`` (counts).  Columns:

    user_id, age_bucket, gender, occupation, zip_prefix     user profile (categorical)
    item_id, release_year, genre                            candidate (categorical; genre: its first genre)
    genres        the candidate's genres, "|"-joined (sequence, max_len 6, mean-pooled)
    hist_items    the user's previous <= 20 rated items, "|"-joined, most recent last
                  (sequence, shares item_id's vocabulary, attention with target item_id)
    hist_genres   the first genre of each of those items, aligned with hist_items
                  (sequence, shares genre's vocabulary, attention with target genre)
    like          label: rating >= 4
    rating, timestamp   kept for inspection (not features)

age_bucket: the MovieLens-1M buckets, named by their lower bound (1: under 18, 18, 25, 35, 45,
50, 56+); zip_prefix: the first two characters of the zip code.

Order and histories: a user's ratings are ordered by (timestamp, item id); item ids compare as
integers when every id is one, else as text.  A row's history holds only that user's ratings
with a STRICTLY earlier timestamp (ratings at the row's own second are not in it, whatever
their item id), the last 20 of them in that order; never the row itself or anything later.

Split, per user in the same order: the last round(n / 10) ratings go to test, the round(n / 10)
before them to valid, the rest to train, with round(x) = floor(x + 0.5) computed as
(n + 5) // 10 (n = 20 -> 2, 24 -> 2, 25 -> 3); deterministic.  Histories look across splits:
a test row's history holds the user's earlier train and valid ratings.

Usage: python data_tools/movielens_sequences.py --raw DIR --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

HIST_LEN = 20
GENRES_LEN = 6  # the most genres of one MovieLens-100K movie
SEPARATOR = "|"
SPLITS = ("train", "valid", "test")
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
PROFILE = ("user_id", "age_bucket", "gender", "occupation", "zip_prefix")
CANDIDATE = ("item_id", "release_year", "genre")
COLUMNS = PROFILE + CANDIDATE + ("genres", "hist_items", "hist_genres", "like", "rating", "timestamp")
# schema file name -> pooling of the two history fields (None: no history field)
SCHEMAS: dict[str, str | None] = {"schema.yaml": "attention", "schema_mean.yaml": "mean",
                                  "schema_nohist.yaml": None}
_RAW = {"inter": ("user_id", "item_id", "rating", "timestamp"),
        "item": ("item_id", "release_year", "class"),
        "user": ("user_id", "age", "gender", "occupation", "zip_code")}


class MovieLensFormatError(ValueError):
    """A raw file that cannot be converted; the message names the file and the fix."""


def read_atomic(raw_dir: Path, kind: str) -> pd.DataFrame:
    """``ml-100k.<kind>`` as text columns named without their ``:type`` suffix (the needed ones)."""
    path = raw_dir / f"ml-100k.{kind}"
    if not path.is_file():
        raise MovieLensFormatError(f"{path}: not found; --raw must be the folder holding ml-100k.inter, "
                                   "ml-100k.item and ml-100k.user")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    missing = [c for c in _RAW[kind] if c not in frame.columns]
    if missing:
        raise MovieLensFormatError(f"{path}: no column(s) {missing} in the header {list(frame.columns)}; "
                                   "expected RecBole's atomic format (name:type, tab-separated)")
    return frame[list(_RAW[kind])]


def _id_order(ids: pd.Series) -> np.ndarray:
    """Sort keys [n] of ids: their integer value when every id is an integer, else their text rank."""
    as_int = pd.to_numeric(ids, errors="coerce")
    if not as_int.isna().any() and (as_int == as_int.round()).all():
        return as_int.to_numpy(np.int64)
    return pd.factorize(ids, sort=True)[0]


def _join(tokens: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """[n] "|"-joined strings of consecutive runs of ``tokens`` (flat str array) of ``lengths`` [n]."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens, pa.string()))
    return pc.binary_join(lists, SEPARATOR)


def _age_bucket(age: pd.Series, path: Path) -> np.ndarray:
    years = pd.to_numeric(age, errors="coerce")
    if years.isna().any():
        raise MovieLensFormatError(f"{path}: age {age[years.isna()].iloc[0]!r} is not a number")
    idx = np.searchsorted(np.array(AGE_BUCKETS[1:]), years.to_numpy(), side="right")
    return np.array(AGE_BUCKETS)[idx].astype(str)


def build_rows(raw_dir: Path) -> pd.DataFrame:
    """Every rating as one row of COLUMNS plus ``split``, in per-user (timestamp, item id) order."""
    inter, items, users = (read_atomic(raw_dir, k) for k in ("inter", "item", "user"))
    inter_path = raw_dir / "ml-100k.inter"
    for kind, frame, key in (("item", items, "item_id"), ("user", users, "user_id")):
        unknown = ~inter[key].isin(frame[key])
        if unknown.any():
            raise MovieLensFormatError(f"{inter_path}: {int(unknown.sum())} rating(s) of a {key} missing from "
                                       f"ml-100k.{kind} (first: {inter[key][unknown].iloc[0]!r})")
    ts = pd.to_numeric(inter["timestamp"], errors="coerce")
    rating = pd.to_numeric(inter["rating"], errors="coerce")
    for name, col in (("timestamp", ts), ("rating", rating)):
        if col.isna().any():
            raise MovieLensFormatError(f"{inter_path}: {name} {inter[name][col.isna()].iloc[0]!r} is not a number")
    order = np.lexsort((_id_order(inter["item_id"]), ts.to_numpy(), _id_order(inter["user_id"])))
    inter = inter.iloc[order].reset_index(drop=True)
    ts = ts.to_numpy(np.int64)[order]
    n = len(inter)

    # Position of each row's user run and of its (user, timestamp) run in the sorted order.
    user_code = pd.factorize(inter["user_id"])[0]
    new_user = np.r_[True, user_code[1:] != user_code[:-1]]
    new_time = new_user | np.r_[True, ts[1:] != ts[:-1]]
    idx = np.arange(n)
    user_start = np.maximum.accumulate(np.where(new_user, idx, 0))
    time_start = np.maximum.accumulate(np.where(new_time, idx, 0))
    hist_len = np.minimum(time_start - user_start, HIST_LEN)  # strictly earlier ratings only
    slot = np.arange(HIST_LEN)[None, :]
    filled = slot < hist_len[:, None]
    hist_pos = ((time_start - hist_len)[:, None] + slot)[filled]  # row-major: oldest first

    genre_lists = items["class"].str.split()
    item_info = pd.DataFrame({"release_year": items["release_year"].to_numpy(),
                              "genre": genre_lists.str[0].fillna("").to_numpy(),
                              "genres": genre_lists.str.join(SEPARATOR).to_numpy()},
                             index=pd.Index(items["item_id"]))
    if not item_info.index.is_unique:
        dup = item_info.index[item_info.index.duplicated()][0]
        raise MovieLensFormatError(f"{raw_dir / 'ml-100k.item'}: item_id {dup!r} appears twice")
    cand = item_info.loc[inter["item_id"]].reset_index(drop=True)
    user_path = raw_dir / "ml-100k.user"
    users = users.drop_duplicates("user_id").set_index("user_id")
    prof = users.loc[inter["user_id"]].reset_index()
    item_tokens = inter["item_id"].to_numpy(dtype=object)

    size = np.bincount(user_code)[user_code]
    rank = idx - user_start
    n_hold = (size + 5) // 10  # round(size / 10), half up
    split = np.where(rank >= size - n_hold, "test", np.where(rank >= size - 2 * n_hold, "valid", "train"))
    return pd.DataFrame({
        "user_id": inter["user_id"], "age_bucket": _age_bucket(prof["age"], user_path),
        "gender": prof["gender"], "occupation": prof["occupation"], "zip_prefix": prof["zip_code"].str[:2],
        "item_id": inter["item_id"], "release_year": cand["release_year"], "genre": cand["genre"],
        "genres": cand["genres"],
        "hist_items": _join(item_tokens[hist_pos], hist_len).to_pandas(),
        "hist_genres": _join(cand["genre"].to_numpy(dtype=object)[hist_pos], hist_len).to_pandas(),
        "like": (rating.to_numpy()[order] >= 4).astype(np.int8),
        "rating": rating.to_numpy()[order], "timestamp": ts, "split": split,
    })


def schema_yaml(files: dict[str, str], pooling: str | None) -> str:
    """The dataset's schema (text); ``pooling`` of the history fields, None for none."""
    lines = ["name: movielens_100k_seq",
             "files: {" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}",
             "fields:"]
    lines += [f"  - {{name: {name}, type: categorical}}" for name in PROFILE + CANDIDATE]
    lines.append(f'  - {{name: genres, type: sequence, separator: "{SEPARATOR}", max_len: {GENRES_LEN}, '
                 "pooling: mean}")
    for name, owner in (("hist_items", "item_id"), ("hist_genres", "genre")) if pooling else ():
        target = f", target: {owner}" if pooling == "attention" else ""
        lines.append(f'  - {{name: {name}, type: sequence, separator: "{SEPARATOR}", max_len: {HIST_LEN}, '
                     f"share_embedding: {owner}, pooling: {pooling}{target}}}")
    lines += ["tasks:", "  - {name: like, label: like}", ""]
    return "\n".join(lines)


def convert(raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the split files, the three schemas and meta.json into ``out_dir``; returns the meta dict."""
    rows = build_rows(Path(raw_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {s: f"{s}.csv" for s in SPLITS}
    meta: dict = {"rows": {}, "like_rate": {}, "mean_hist_len": {}, "empty_hist_rows": {}}
    hist_len = rows["hist_items"].str.count(r"\|") + (rows["hist_items"] != "")
    for split in SPLITS:
        part = rows[rows["split"] == split]
        # time order across users: timestamp, then user id, then item id
        order = np.lexsort((_id_order(part["item_id"]), _id_order(part["user_id"]), part["timestamp"].to_numpy()))
        part.iloc[order][list(COLUMNS)].to_csv(out / files[split], index=False)
        meta["rows"][split] = len(part)
        meta["like_rate"][split] = float(part["like"].mean())
        meta["mean_hist_len"][split] = float(hist_len[part.index].mean())
        meta["empty_hist_rows"][split] = int((hist_len[part.index] == 0).sum())
    meta.update(users=int(rows["user_id"].nunique()), items=int(rows["item_id"].nunique()),
                hist_len=HIST_LEN, columns=list(COLUMNS))
    for name, pooling in SCHEMAS.items():
        (out / name).write_text(schema_yaml(files, pooling))
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the rows per split; returns the exit code (2: a raw file is wrong)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, type=Path, help="folder with ml-100k.inter / .item / .user")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    try:
        meta = convert(args.raw, args.out)
    except MovieLensFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: rows {meta['rows']}, {meta['users']} users, {meta['items']} items, "
          f"mean history {meta['mean_hist_len']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
