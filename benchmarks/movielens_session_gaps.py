"""How far apart a MovieLens user's consecutive ratings are: whether "the previous items" of a row are
behaviour before it or the rest of one rating session.

    python benchmarks/movielens_session_gaps.py --data .cache/movielens_seq   # data_tools/movielens_sequences.py's output
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def gap_summary(ratings: pd.DataFrame) -> dict[str, float]:
    """Gaps in seconds between each user's consecutive ratings (by timestamp): the median, and the
    shares under 10 minutes and under a day. ratings: columns user_id, timestamp."""
    gaps = ratings.sort_values(["user_id", "timestamp"]).groupby("user_id")["timestamp"].diff().dropna()
    return {"gaps": int(len(gaps)), "median_s": float(gaps.median()),
            "share_under_10_min": float((gaps < 600).mean()), "share_under_1_day": float((gaps < 86_400).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train.csv, valid.csv, test.csv")
    args = parser.parse_args()
    frames = [pd.read_csv(args.data / f"{s}.csv", usecols=["user_id", "timestamp"]) for s in ("train", "valid", "test")]
    print(gap_summary(pd.concat(frames, ignore_index=True)))


if __name__ == "__main__":
    main()
