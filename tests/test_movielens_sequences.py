"""Tests of data_tools/movielens_sequences.py on a small raw fixture written here (ties in time,
a user with more than 20 earlier ratings, users of every split size) and on the real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support.scripts import REPO_ROOT, load_script

ml = load_script("data_tools/movielens_sequences.py")

# (user, item, rating, timestamp) in a shuffled file order. User 1 rates items 7, 3, 5 in the same
# second, then 2 at 105, then 25 more items: 29 ratings in all.
U1 = [(1, 7, 5, 100), (1, 3, 4, 100), (1, 5, 3, 100), (1, 2, 1, 105)] + [
    (1, 10 + k, 1 + k % 5, 200 + 10 * (k // 2)) for k in range(25)]  # pairs share a second
U2 = [(2, 10 + k, 2 + k % 4, 150 + k) for k in range(12)]
U3 = [(3, 2, 4, 300), (3, 3, 4, 300), (3, 4, 2, 301), (3, 5, 5, 302), (3, 6, 1, 303)]
U4 = [(4, 1, 4, 50), (4, 2, 3, 60), (4, 3, 5, 70), (4, 4, 4, 80)]
RATINGS = U1 + U2 + U3 + U4
GENRES = {1: "Comedy", 2: "Action Adventure", 3: "Drama", 4: "Sci-Fi Thriller War", 5: "unknown",
          6: "Children's Comedy"}


def _write_raw(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(RATINGS))
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += ["\t".join(map(str, RATINGS[i])) for i in order]
    (root / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\tMovie {i}\t{'' if i == 5 else 1990 + i}\t{GENRES.get(i, 'Drama Romance')}" for i in range(1, 36)]
    (root / "ml-100k.item").write_text("\n".join(items) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
             "1\t17\tM\tstudent\t02139", "2\t30\tF\twriter\tT8H1N", "3\t56\tM\tother\t94043",
             "4\t18\tF\tartist\t55414"]
    (root / "ml-100k.user").write_text("\n".join(users) + "\n")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    tmp = tmp_path_factory.mktemp("ml")
    raw = _write_raw(tmp / "raw")
    ml.convert(raw, tmp / "out")
    frames = {s: pd.read_csv(tmp / "out" / f"{s}.csv", dtype=str, keep_default_na=False) for s in ml.SPLITS}
    return tmp / "out", frames


def _all(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([f.assign(split=s) for s, f in frames.items()], ignore_index=True)


def _expected_history(user: int, ts: int) -> list[str]:
    """Brute force: the user's ratings strictly before ts, by (timestamp, item id), last 20."""
    earlier = sorted((t, i) for u, i, _, t in RATINGS if u == user and t < ts)
    return [str(i) for _, i in earlier][-20:]


def test_history_is_strictly_earlier_in_tie_order_and_capped(built) -> None:
    _, frames = built
    df = _all(frames)
    assert len(df) == len(RATINGS) and list(frames["train"].columns) == list(ml.COLUMNS)
    for row in df.itertuples():
        want = _expected_history(int(row.user_id), int(row.timestamp))
        got = row.hist_items.split("|") if row.hist_items else []
        assert got == want, (row.user_id, row.item_id, row.timestamp)
        assert row.item_id not in got  # never the row itself (each item rated once per user here)
    u1 = df[df["user_id"] == "1"].set_index("item_id")
    assert u1.loc["2", "hist_items"] == "3|5|7"  # the three items of second 100, by item id
    assert (u1.loc[["3", "5", "7"], "hist_items"] == "").all()  # same second as the row: not history
    assert u1.loc["11", "hist_items"] == u1.loc["10", "hist_items"] == "3|5|7|2"  # a pair at second 200
    lengths = df["hist_items"].map(lambda c: len(c.split("|")) if c else 0)
    assert lengths.max() == 20
    # user 1's last rating (item 34, alone in its second): 28 earlier ones (3, 5, 7, 2, 10..33), the
    # last 20 kept, most recent last
    assert u1.loc["34", "hist_items"].split("|") == [str(i) for i in range(14, 34)]


def test_history_genres_labels_and_profile(built) -> None:
    _, frames = built
    df = _all(frames)
    first_genre = {str(i): GENRES.get(i, "Drama Romance").split()[0] for i in range(1, 36)}
    for row in df.itertuples():
        items = row.hist_items.split("|") if row.hist_items else []
        genres = row.hist_genres.split("|") if row.hist_genres else []
        assert genres == [first_genre[i] for i in items]
        assert row.genre == first_genre[row.item_id]
        assert row.genres == GENRES.get(int(row.item_id), "Drama Romance").replace(" ", "|")
        assert row.like == ("1" if float(row.rating) >= 4 else "0")
    assert set(df.loc[df["item_id"] == "5", "release_year"]) == {""}  # missing year: empty cell
    profile = df.drop_duplicates("user_id").set_index("user_id")
    assert profile["age_bucket"].to_dict() == {"1": "1", "2": "25", "3": "56", "4": "18"}
    assert profile["zip_prefix"].to_dict() == {"1": "02", "2": "T8", "3": "94", "4": "55"}


def test_split_per_user_by_time(built) -> None:
    _, frames = built
    df = _all(frames)
    sizes = df.groupby(["user_id", "split"]).size().unstack(fill_value=0)
    # n -> test = valid = (n + 5) // 10: 29 -> 3, 12 -> 1, 5 -> 1, 4 -> 0
    assert sizes.loc[:, ["train", "valid", "test"]].to_dict("index") == {
        "1": {"train": 23, "valid": 3, "test": 3}, "2": {"train": 10, "valid": 1, "test": 1},
        "3": {"train": 3, "valid": 1, "test": 1}, "4": {"train": 4, "valid": 0, "test": 0}}
    rank = {"train": 0, "valid": 1, "test": 2}
    for _, g in df.groupby("user_id"):
        g = g.assign(t=g["timestamp"].astype(int), i=g["item_id"].astype(int)).sort_values(["t", "i"])
        assert g["split"].map(rank).is_monotonic_increasing  # train, then valid, then test
    u3 = df[df["user_id"] == "3"].set_index("item_id")["split"]
    assert u3.to_dict() == {"2": "train", "3": "train", "4": "train", "5": "valid", "6": "test"}
    for frame in frames.values():  # each file in time order
        t = frame["timestamp"].astype(int)
        assert t.is_monotonic_increasing


def test_schemas_match_the_configs(built) -> None:
    out, _ = built
    committed = {"schema.yaml": "movielens_schema.yaml", "schema_mean.yaml": "movielens_mean_schema.yaml",
                 "schema_nohist.yaml": "movielens_nohist_schema.yaml"}
    for name, copy in committed.items():
        assert (out / name).read_text() == (REPO_ROOT / "configs" / "sequences" / copy).read_text(), name
    att = yaml.safe_load((out / "schema.yaml").read_text())
    fields = {f["name"]: f for f in att["fields"]}
    assert fields["hist_items"] == {"name": "hist_items", "type": "sequence", "separator": "|", "max_len": 20,
                                    "share_embedding": "item_id", "pooling": "attention", "target": "item_id"}
    assert fields["hist_genres"] == {"name": "hist_genres", "type": "sequence", "separator": "|", "max_len": 20,
                                     "share_embedding": "genre", "pooling": "attention", "target": "genre"}
    assert fields["genres"] == {"name": "genres", "type": "sequence", "separator": "|", "max_len": 6,
                                "pooling": "mean"}
    assert att["tasks"] == [{"name": "like", "label": "like"}]
    mean = {f["name"]: f for f in yaml.safe_load((out / "schema_mean.yaml").read_text())["fields"]}
    assert mean["hist_items"]["pooling"] == "mean" and "target" not in mean["hist_items"]
    nohist = [f["name"] for f in yaml.safe_load((out / "schema_nohist.yaml").read_text())["fields"]]
    assert nohist == [n for n in fields if not n.startswith("hist_")]


def test_configs_load() -> None:
    from mtl_final.config import load_config

    folder = REPO_ROOT / "configs" / "sequences"
    schemas = {"movielens_mlp_nohist": "movielens_nohist_schema.yaml",
               "movielens_mlp_mean": "movielens_mean_schema.yaml",
               "movielens_din": "movielens_schema.yaml", "movielens_final_attention": "movielens_schema.yaml"}
    schemas.update({f"movielens_nouser_{k}": v.replace("movielens_", "movielens_nouser_")
                    for k, v in [("mlp_nohist", "movielens_nohist_schema.yaml"),
                                 ("mlp_mean", "movielens_mean_schema.yaml"), ("din", "movielens_schema.yaml")]})
    for stem, schema in schemas.items():
        cfg = load_config(folder / f"{stem}.yaml")
        assert cfg["data"]["schema"] == f"configs/sequences/{schema}"
        assert cfg["data"]["root"] == ".cache/movielens_seq" and cfg["tasks"] == ["like"]
    for stem in ("nohist", "mean", ""):  # the no-user-id variants: the same schemas without user_id
        name = f"movielens_{stem + '_' if stem else ''}schema.yaml"
        full = yaml.safe_load((folder / name).read_text())["fields"]
        nouser = yaml.safe_load((folder / name.replace("movielens_", "movielens_nouser_")).read_text())["fields"]
        assert nouser == [f for f in full if f["name"] != "user_id"]
    cfg = load_config(folder / "movielens_final_attention.yaml")
    assert (cfg["model"]["name"], cfg["model"]["num_blocks"], cfg["block"]["kind"]) == ("final", 1, "final")


def test_bad_raw_files_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _write_raw(tmp_path / "raw")
    assert ml.main(["--raw", str(raw), "--out", str(tmp_path / "out")]) == 0
    assert "rows {'train': 40, 'valid': 5, 'test': 5}" in capsys.readouterr().out
    with pytest.raises(ml.MovieLensFormatError, match=r"nowhere/ml-100k\.inter: not found"):
        ml.convert(tmp_path / "nowhere", tmp_path / "o2")
    (raw / "ml-100k.inter").write_text((raw / "ml-100k.inter").read_text() + "2\t99\t4\t500\n")
    with pytest.raises(ml.MovieLensFormatError, match=r"ml-100k\.inter: 1 rating\(s\) of a item_id missing"):
        ml.convert(raw, tmp_path / "o3")
    (raw / "ml-100k.user").write_text("user_id:token\tage:token\n1\t20\n")
    assert ml.main(["--raw", str(raw), "--out", str(tmp_path / "o4")]) == 2
    assert "no column(s) ['gender', 'occupation', 'zip_code']" in capsys.readouterr().err


def test_real_movielens_100k(shared_dataset, tmp_path: Path) -> None:
    raw = shared_dataset("movielens_100k")
    meta = ml.convert(raw, tmp_path)
    frames = {s: pd.read_csv(tmp_path / f"{s}.csv", dtype=str, keep_default_na=False) for s in ml.SPLITS}
    df = _all(frames)
    assert len(df) == 100_000 and sum(meta["rows"].values()) == 100_000
    assert (meta["users"], meta["items"]) == (943, 1682) == (df["user_id"].nunique(), df["item_id"].nunique())
    n = df.groupby("user_id").size()
    held = (n + 5) // 10
    sizes = df.groupby(["user_id", "split"]).size().unstack(fill_value=0)
    assert (sizes["test"] == held).all() and (sizes["valid"] == held).all()
    assert meta["rows"]["test"] == int(held.sum())
    ts = df["timestamp"].astype(np.int64)
    # every history item was rated by the same user strictly earlier; at most 20, most recent last
    when = {(u, i): t for u, i, t in zip(df["user_id"], df["item_id"], ts)}
    lengths = []
    for u, cell, t in zip(df["user_id"], df["hist_items"], ts):
        items = cell.split("|") if cell else []
        times = [when[(u, i)] for i in items]
        assert all(x < t for x in times) and times == sorted(times)
        lengths.append(len(items))
    lengths = np.array(lengths)
    assert lengths.max() == 20 and (lengths == 20).mean() > 0.8
    assert {len(c.split("|")) for c in df["genres"]} <= set(range(1, 7))
    assert df["like"].isin(["0", "1"]).all() and 0.4 < df["like"].astype(int).mean() < 0.7
    for frame in frames.values():
        assert frame["timestamp"].astype(np.int64).is_monotonic_increasing


def test_session_gap_summary_by_hand() -> None:
    from tests.support.scripts import load_script

    gaps = load_script("benchmarks/movielens_session_gaps.py").gap_summary
    ratings = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "timestamp": [100, 0, 100_000, 5, 5]})
    # user 1 sorted: 0, 100, 100000 -> gaps 100, 99900 (over a day, 86400 s); user 2: gap 0
    assert gaps(ratings) == {"gaps": 3, "median_s": 100.0, "share_under_10_min": 2 / 3, "share_under_1_day": 2 / 3}
