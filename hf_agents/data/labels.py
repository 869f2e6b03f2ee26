"""Durable label store: one SQLite file (WAL, synchronous=FULL) shared by every labeller and server.

A label is the episodes a labeller was shown (left to right) and a score for each (higher is better):
a pair judged left-better is scores [1, 0], a tie [0, 0]; a ranking or a P-level rating is one level per
video; a skip has no scores. `add` returns only after the transaction is on disk, so a label the page
acknowledged survives a killed server. Each call opens its own connection: threads and processes share
the file safely (SQLite's locking), and one labeller's labels never touch another's rows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

from hf_agents.data.preferences import write_preferences
from hf_agents.data.schema import DatasetFormatError

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    labeller TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_path TEXT NOT NULL,
    kind TEXT NOT NULL,
    episodes TEXT NOT NULL,
    scores TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answered (
    labeller TEXT NOT NULL,
    dataset TEXT NOT NULL,
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    PRIMARY KEY (labeller, dataset, a, b)
);
"""
KINDS = ("pair", "ranking")


class LabelError(ValueError):
    """A label that cannot be stored (unknown episode, malformed scores, a pair already answered)."""


class LabelStore:
    """Labels of one trajectory dataset (`dataset` = its fingerprint) in the SQLite file `path`."""

    def __init__(self, path: str | Path, dataset: str, dataset_path: str, episode_ids):
        self.path, self.dataset, self.dataset_path = Path(path), dataset, str(dataset_path)
        self.episode_ids = frozenset(int(i) for i in episode_ids)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> contextlib.closing:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            raise DatasetFormatError(f"{self.path}: not a label database ({e}); pick another --db") from None
        return contextlib.closing(db)

    def check(self, kind: str, episodes, scores) -> tuple[list[int], list[float] | None]:
        """Validated (episodes, scores); raises LabelError naming what is wrong."""
        if kind not in KINDS:
            raise LabelError(f"kind must be one of {KINDS}, got {kind!r}")
        try:
            episodes = [int(e) for e in episodes]
            scores = None if scores is None else [float(s) for s in scores]
        except (TypeError, ValueError):
            raise LabelError("episodes must be integers and scores numbers") from None
        unknown = sorted(set(episodes) - self.episode_ids)
        if unknown:
            raise LabelError(f"episode(s) {unknown[:5]} are not in the dataset {self.dataset_path}")
        if len(set(episodes)) != len(episodes) or not 2 <= len(episodes) <= (2 if kind == "pair" else 5):
            raise LabelError(f"a {kind} label needs {'2' if kind == 'pair' else '2 to 5'} different episodes, "
                             f"got {episodes}")
        if scores is not None and len(scores) != len(episodes):
            raise LabelError(f"{len(scores)} scores for {len(episodes)} episodes")
        return episodes, scores

    def add(self, labeller: str, kind: str, episodes, scores) -> int:
        """Store one label (scores None = skipped) durably; returns its id. A pair this labeller already
        answered is refused (a double-submitted page), as is any unknown episode."""
        if not labeller or not str(labeller).strip():
            raise LabelError("a label needs the labeller's name")
        episodes, scores = self.check(kind, episodes, scores)
        pairs = [tuple(sorted(p)) for p in itertools.combinations(episodes, 2)]
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if kind == "pair" and self._answered(db, labeller, pairs):
                    raise LabelError(f"{labeller} has already labelled the pair {episodes}")
                cur = db.execute("INSERT INTO labels (labeller, dataset, dataset_path, kind, episodes, scores, created)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (labeller, self.dataset, self.dataset_path, kind, json.dumps(episodes),
                                  None if scores is None else json.dumps(scores), time.time()))
                db.executemany("INSERT OR IGNORE INTO answered VALUES (?, ?, ?, ?)",
                               [(labeller, self.dataset, a, b) for a, b in pairs])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(cur.lastrowid)

    def _answered(self, db, labeller, pairs) -> bool:
        return any(db.execute("SELECT 1 FROM answered WHERE labeller=? AND dataset=? AND a=? AND b=?",
                              (labeller, self.dataset, a, b)).fetchone() for a, b in pairs)

    def answered(self, labeller: str) -> set[tuple[int, int]]:
        """The (smaller id, larger id) pairs this labeller has seen and answered on this dataset."""
        with self._connect() as db:
            rows = db.execute("SELECT a, b FROM answered WHERE labeller=? AND dataset=?", (labeller, self.dataset))
            return {(a, b) for a, b in rows}

    def count(self, labeller: str | None = None) -> int:
        """Labels given on this dataset (by one labeller, or by all)."""
        query, args = "SELECT COUNT(*) FROM labels WHERE dataset=?", [self.dataset]
        if labeller is not None:
            query, args = query + " AND labeller=?", args + [labeller]
        with self._connect() as db:
            return int(db.execute(query, args).fetchone()[0])


def read_labels(path: str | Path, labeller: str | None = None) -> list[dict]:
    """Every label in a label database, oldest first (optionally one labeller's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label database (start labelling with `hf-agents label DATASET`)")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            query = "SELECT * FROM labels" + (" WHERE labeller=?" if labeller else "") + " ORDER BY id"
            rows = [dict(r) for r in db.execute(query, [labeller] if labeller else [])]
    except sqlite3.DatabaseError as e:
        raise DatasetFormatError(f"{path}: not a label database ({e})") from None
    for row in rows:
        row["episodes"] = json.loads(row["episodes"])
        row["scores"] = None if row["scores"] is None else json.loads(row["scores"])
    return rows


def expand(label: dict) -> tuple[list[tuple[int, int]], int]:
    """A label -> its strict (chosen, rejected) pairs and its number of tied pairs. A ranking or rating of K
    videos gives every one of its K(K-1)/2 pairs (more bits per watched video, paper Appendix J)."""
    if label["scores"] is None:
        return [], 0
    pairs, ties = [], 0
    for (a, sa), (b, sb) in itertools.combinations(zip(label["episodes"], label["scores"]), 2):
        if sa == sb:
            ties += 1
        else:
            pairs.append((a, b) if sa > sb else (b, a))
    return pairs, ties


def export_preferences(db_path: str | Path, out: str | Path, labeller: str | None = None) -> dict:
    """Write the preferences parquet the reward stage reads; ties and skips are dropped and counted.
    Labels must all be of one dataset (preferences name its episode ids)."""
    labels = read_labels(db_path, labeller)
    if not labels:
        who = f" by labeller '{labeller}'" if labeller else ""
        raise DatasetFormatError(f"{db_path}: no labels{who}; nothing was written")
    datasets = sorted({row["dataset_path"] for row in labels} if len({r["dataset"] for r in labels}) > 1 else [])
    if datasets:
        raise DatasetFormatError(f"{db_path}: labels of several datasets {datasets}; export one labeller's "
                                 "(--labeller) or keep one database per dataset")
    rows, counts = [], Counter()
    for label in labels:
        pairs, ties = expand(label)
        counts["skipped"] += label["scores"] is None
        counts["tied_pairs"] += ties
        rows += [(c, r, label["labeller"]) for c, r in pairs]
    if not rows:
        raise DatasetFormatError(f"{db_path}: {len(labels)} label(s) but no strict preference (all ties or skips); "
                                 "nothing was written")
    write_preferences(out, [(c, r) for c, r, _ in rows], labeller=[who for _, _, who in rows])
    return {"labels": len(labels), "comparisons": len(rows), "skipped": counts["skipped"],
            "tied_pairs_dropped": counts["tied_pairs"], "labellers": sorted({r[2] for r in rows}),
            "dataset": labels[0]["dataset_path"], "out": str(out)}
