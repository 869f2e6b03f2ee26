"""Durable label store: one SQLite file (WAL, synchronous=FULL) shared by every labeller and server.

A label is the episodes a labeller was shown (left to right) and a score for each (higher is better):
a pair judged left-better is scores [1, 0], a tie [0, 0]; a ranking or a P-level rating is one level per
video; a skip has no scores. `add` returns only after the transaction is on disk, so a label the page
acknowledged survives a killed server. Each call opens its own connection: threads and processes share
the file safely (SQLite's locking), and one labeller's labels never touch another's rows.

An undone label stays in the file, marked with who undid it and when; it is left out of `read_labels` (unless
asked for), of the counts and of the export. A labeller judges each pair once: a label that repeats a pair the
labeller has a live label on is refused, so no comparison is ever stored twice.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import sqlite3
import time
from collections import Counter, defaultdict
from pathlib import Path

from hf_agents.data.preferences import write_preferences
from hf_agents.data.schema import DatasetFormatError
from hf_agents.locations import fingerprint

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    labeller TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_path TEXT NOT NULL,
    kind TEXT NOT NULL,
    episodes TEXT NOT NULL,
    scores TEXT,
    created REAL NOT NULL,
    undone_by TEXT,
    undone_at REAL
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
AUDIT_COLUMNS = ("undone_by TEXT", "undone_at REAL")  # added to databases written before undo existed


class LabelError(ValueError):
    """A label that cannot be stored (unknown episode, malformed scores, a pair already answered)."""


def check_labeller(name) -> str:
    """The labeller's name, stripped; LabelError when empty, too long or holding control characters."""
    name = str(name or "").strip()
    if not name:
        raise LabelError("the labeller's name is empty: pass --labeller NAME (or ?labeller=NAME in the page "
                         "address); each designer's labels train their own reward model")
    if len(name) > 100 or not name.isprintable():
        raise LabelError(f"labeller {name[:40]!r}: a name must be printable and at most 100 characters")
    return name


def sorted_pairs(episodes) -> list[tuple[int, int]]:
    """Every pair of `episodes` as (smaller id, larger id)."""
    return [tuple(sorted(p)) for p in itertools.combinations(episodes, 2)]


# SQLite's errors that say the file is not a (whole) database; the others (cannot open, read-only, disk full, I/O)
# are about where it lies
NOT_A_DATABASE = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


def folder_problem(path: Path, error: sqlite3.Error, doing: str) -> OSError | None:
    """Why SQLite could not `doing` ("create", "write" or "read") the label database `path` when the cause is its
    folder or disk, not the file: a new database that cannot be made there, or a database whose journal files
    (-wal, -shm, made beside it) cannot be; one line naming the folder and the fix. None when the file itself is the
    problem (not a database), or when the folder can be written (then SQLite's error says the file is not one)."""
    if (getattr(error, "sqlite_errorname", None) or "").startswith(NOT_A_DATABASE):
        return None
    folder = Path(os.path.abspath(path)).parent
    if "disk is full" in str(error):  # SQLITE_FULL
        code = errno.ENOSPC
    else:
        probe = folder / f".{path.name}.probe-{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as e:
            code = e.errno
        else:
            os.unlink(probe)
            if doing == "write" and path.is_file() and not os.access(path, os.W_OK):
                return PermissionError(f"{path}: cannot write the label database: permission denied (EACCES); "
                                       "pick another --db or fix its permissions")
            return None
    cause = {errno.EROFS: f"the folder {folder} is read-only", errno.ENOSPC: f"the disk of the folder {folder} is full",
             errno.EDQUOT: f"the disk quota of the folder {folder} is used up",
             errno.EACCES: f"permission denied to write in the folder {folder}",
             errno.EPERM: f"writing in the folder {folder} is not permitted",
             errno.ENOENT: f"the folder {folder} does not exist"}.get(code, f"the folder {folder}: {os.strerror(code)}")
    what = {"create": "cannot create the label database",
            "write": "cannot write the label database (SQLite makes its -wal and -shm files beside it)",
            "read": "cannot read the label database (SQLite makes its -shm file beside it)"}[doing]
    fix = ("copy the database to a folder you may write and read that copy" if doing == "read" else
           "free space or pick another --db" if code in (errno.ENOSPC, errno.EDQUOT) else "pick another --db")
    return OSError(f"{path}: {what}: {cause} ({errno.errorcode.get(code, code)}); {fix}")


class LabelStore:
    """Labels of one trajectory dataset (`dataset` = its fingerprint) in the SQLite file `path`."""

    def __init__(self, path: str | Path, dataset: str, dataset_path: str, episode_ids):
        self.path, self.dataset, self.dataset_path = Path(path), dataset, str(dataset_path)
        self.episode_ids = frozenset(int(i) for i in episode_ids)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doing = "write" if self.path.exists() else "create"
        try:
            with self._connect(doing) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                self._add_audit_columns(db)
        except (sqlite3.Error, OSError) as e:  # OSError: `folder_problem`'s, from `_connect`
            if doing == "create":  # begun on a full disk: empty files, no database; they go
                for file in (self.path, *(self.path.with_name(self.path.name + end) for end in ("-wal", "-shm"))):
                    with contextlib.suppress(OSError):
                        if file.stat().st_size == 0:
                            file.unlink()
            if isinstance(e, sqlite3.Error):
                raise self._problem(e, doing) from None
            raise

    def _problem(self, error: sqlite3.Error, doing: str) -> Exception:
        """A full or read-only folder (`folder_problem`), else a file that is not a label database."""
        return folder_problem(self.path, error, doing) or DatasetFormatError(
            f"{self.path}: not a label database ({error}); pick another --db")

    def _connect(self, doing: str = "write") -> contextlib.closing:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            raise self._problem(e, doing) from None
        return contextlib.closing(db)

    @staticmethod
    def _add_audit_columns(db) -> None:
        db.execute("BEGIN IMMEDIATE")  # several servers may open an old file at once
        have = {row[1] for row in db.execute("PRAGMA table_info(labels)")}
        for column in AUDIT_COLUMNS:
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE labels ADD COLUMN {column}")
        db.execute("COMMIT")

    def check(self, kind: str, episodes, scores) -> tuple[list[int], list[float] | None]:
        """Validated (episodes, scores); raises LabelError naming what is wrong."""
        if kind not in KINDS:
            raise LabelError(f"kind must be one of {KINDS}, got {kind!r}")
        try:
            episodes = [int(e) for e in episodes]
            scores = None if scores is None else [float(s) for s in scores]
        except (TypeError, ValueError, OverflowError):
            raise LabelError("episodes must be integers and scores numbers") from None
        unknown = sorted(set(episodes) - self.episode_ids)
        if unknown:
            raise LabelError(f"episode(s) {unknown[:5]} are not in the dataset {self.dataset_path}")
        if len(set(episodes)) != len(episodes) or not 2 <= len(episodes) <= (2 if kind == "pair" else 5):
            raise LabelError(f"a {kind} label needs {'2' if kind == 'pair' else '2 to 5'} different episodes, "
                             f"got {episodes}")
        if scores is not None and len(scores) != len(episodes):
            raise LabelError(f"{len(scores)} scores for {len(episodes)} episodes")
        bad = [s for s in scores or [] if not math.isfinite(s)]
        if bad:
            raise LabelError(f"scores {scores}: {bad[0]} is not a finite number (NaN, Infinity and numbers beyond "
                             "±1.8e308 are refused); give one finite score per episode, higher is better")
        return episodes, scores

    def add(self, labeller: str, kind: str, episodes, scores) -> int:
        """Store one label (scores None = skipped) durably; returns its id. A label with a pair this labeller
        already judged is refused (a double-submitted page, a ranking posted twice), as is any unknown episode."""
        labeller = check_labeller(labeller)
        episodes, scores = self.check(kind, episodes, scores)
        pairs = sorted_pairs(episodes)
        with self._connect() as db, self._transaction(db):
            repeated = self._answered(db, labeller, pairs)
            if repeated:
                raise LabelError(f"{labeller} has already labelled the pair {list(repeated)} (this {kind}: "
                                 f"{episodes}); nothing was stored: each pair is judged once (to change a "
                                 "judgement, undo it first: the page's Undo or POST /api/undo)")
            cur = db.execute("INSERT INTO labels (labeller, dataset, dataset_path, kind, episodes, scores, created)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (labeller, self.dataset, self.dataset_path, kind, json.dumps(episodes),
                              None if scores is None else json.dumps(scores), time.time()))
            db.executemany("INSERT OR IGNORE INTO answered VALUES (?, ?, ?, ?)",
                           [(labeller, self.dataset, a, b) for a, b in pairs])
        return int(cur.lastrowid)

    @staticmethod
    @contextlib.contextmanager
    def _transaction(db):
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _answered(self, db, labeller, pairs) -> tuple[int, int] | None:
        """The first of `pairs` this labeller has answered, or None."""
        for a, b in pairs:
            if db.execute("SELECT 1 FROM answered WHERE labeller=? AND dataset=? AND a=? AND b=?",
                          (labeller, self.dataset, a, b)).fetchone():
                return a, b
        return None

    def undo(self, labeller: str) -> dict | None:
        """Mark this labeller's latest live label on this dataset undone (kept, with who and when) so its pairs
        can be asked again; returns that label, or None when there is nothing to undo."""
        labeller = check_labeller(labeller)
        with self._connect() as db, self._transaction(db):
            row = db.execute("SELECT id, kind, episodes, scores FROM labels WHERE labeller=? AND dataset=? AND "
                             "undone_at IS NULL ORDER BY id DESC LIMIT 1", (labeller, self.dataset)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE labels SET undone_by=?, undone_at=? WHERE id=?", (labeller, time.time(), row[0]))
            self._rebuild_answered(db, labeller)
        return {"id": row[0], "kind": row[1], "episodes": json.loads(row[2]),
                "scores": None if row[3] is None else json.loads(row[3])}

    def _rebuild_answered(self, db, labeller: str) -> None:
        """The answered pairs = the pairs of this labeller's live labels (exact even for older files)."""
        db.execute("DELETE FROM answered WHERE labeller=? AND dataset=?", (labeller, self.dataset))
        rows = db.execute("SELECT episodes FROM labels WHERE labeller=? AND dataset=? AND undone_at IS NULL",
                          (labeller, self.dataset))
        pairs = {p for (episodes,) in rows for p in sorted_pairs(json.loads(episodes))}
        db.executemany("INSERT INTO answered VALUES (?, ?, ?, ?)", [(labeller, self.dataset, a, b) for a, b in pairs])

    def answered(self, labeller: str) -> set[tuple[int, int]]:
        """The (smaller id, larger id) pairs this labeller has seen and answered on this dataset."""
        with self._connect() as db:
            rows = db.execute("SELECT a, b FROM answered WHERE labeller=? AND dataset=?", (labeller, self.dataset))
            return {(a, b) for a, b in rows}

    def count(self, labeller: str | None = None) -> int:
        """Live (not undone) labels on this dataset (by one labeller, or by all)."""
        query, args = "SELECT COUNT(*) FROM labels WHERE dataset=? AND undone_at IS NULL", [self.dataset]
        if labeller is not None:
            query, args = query + " AND labeller=?", args + [labeller]
        with self._connect() as db:
            return int(db.execute(query, args).fetchone()[0])

    def labels(self) -> list[dict]:
        """Every live label on this dataset, oldest first."""
        return [r for r in read_labels(self.path) if r["dataset"] == self.dataset]


def read_labels(path: str | Path, labeller: str | None = None, include_undone: bool = False) -> list[dict]:
    """Every live label in a label database, oldest first (optionally one labeller's; `include_undone` adds the
    undone ones, whose `undone_by` and `undone_at` are set)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label database (start labelling with `hf-agents label DATASET`)")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            audited = "undone_at" in {row[1] for row in db.execute("PRAGMA table_info(labels)")}
            where = [w for w, on in (("labeller=?", labeller), ("undone_at IS NULL", audited and not include_undone))
                     if on]
            query = "SELECT * FROM labels" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
            rows = [dict(r) for r in db.execute(query, [labeller] if labeller else [])]
    except sqlite3.DatabaseError as e:
        problem = folder_problem(path, e, "read")
        if problem is not None:
            raise problem from None
        raise DatasetFormatError(f"{path}: not a label database ({e})") from None
    for row in rows:
        row["episodes"] = json.loads(row["episodes"])
        row["scores"] = None if row["scores"] is None else json.loads(row["scores"])
        row.setdefault("undone_by", None), row.setdefault("undone_at", None)
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
        elif a != b:
            pairs.append((a, b) if sa > sb else (b, a))
    return pairs, ties


def verdicts(labels) -> dict[tuple[int, int], dict[str, int]]:
    """(smaller id, larger id) -> {labeller: +1 smaller id better, -1 larger better, 0 tie}; skips give none,
    and a labeller's first judgement of a pair is theirs."""
    found: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for label in labels:
        if label["scores"] is None:
            continue
        for (a, sa), (b, sb) in itertools.combinations(zip(label["episodes"], label["scores"]), 2):
            sign = (sa > sb) - (sa < sb)
            found[(min(a, b), max(a, b))].setdefault(label["labeller"], sign if a < b else -sign)
    return found


def agreement(labels) -> dict:
    """Where two or more labellers judged the same pair: the share of their pairwise judgements that agree
    (ties count as a judgement), overall and for each labeller against the others; None where nothing is shared."""
    agree, total = Counter(), Counter()
    shared = 0
    for judged in verdicts(labels).values():
        shared += len(judged) > 1
        for (p, vp), (q, vq) in itertools.combinations(sorted(judged.items()), 2):
            for who in ("", p, q):
                total[who] += 1
                agree[who] += vp == vq
    rate = {who: round(agree[who] / total[who], 4) for who in total}
    return {"shared_pairs": shared, "judgements_compared": total[""], "agreement": rate.get(""),
            "by_labeller": {who: {"compared": total[who], "agreement": rate[who]} for who in sorted(total) if who}}


def stale_datasets(labels) -> list[tuple[str, str]]:
    """(dataset path, why) for labels that no longer match their dataset (regenerated or gone since they were
    made); [] if all do."""
    problems = []
    for (key, path), n in Counter((r["dataset"], r["dataset_path"]) for r in labels).items():
        now = fingerprint(path)
        if now != key:
            state = "is gone" if now is None else f"has changed since (fingerprint {key[:12]}… then, {now[:12]}… now)"
            problems.append((path, f"{n} label(s) were made on {path}, which {state}"))
    return problems


def label_summary(db_path: str | Path) -> dict:
    """Who labelled what in a label database: live, undone and skipped labels per labeller, and agreement."""
    rows = read_labels(db_path, include_undone=True)
    live = [r for r in rows if r["undone_at"] is None]
    people = {}
    for name in sorted({r["labeller"] for r in rows}):
        mine = [r for r in rows if r["labeller"] == name]
        people[name] = {"labels": sum(r["undone_at"] is None for r in mine),
                        "undone": sum(r["undone_at"] is not None for r in mine),
                        "skipped": sum(r["undone_at"] is None and r["scores"] is None for r in mine)}
    return {"db": str(db_path), "datasets": sorted({r["dataset_path"] for r in live}), "labels": len(live),
            "undone": len(rows) - len(live), "labellers": people, "agreement": agreement(live)}


def export_preferences(db_path: str | Path, out: str | Path, labeller: str | None = None) -> dict:
    """Write the preferences parquet the reward stage reads from the live labels (undone ones are left out);
    ties, skips and any repeated judgement of a pair by one labeller are dropped and counted. The labels must all
    be of one dataset, unchanged since they were made (preferences name its episode ids)."""
    labels = read_labels(db_path, labeller)
    if not labels:
        who = f" by labeller '{labeller}'" if labeller else ""
        raise DatasetFormatError(f"{db_path}: no labels{who}; nothing was written")
    check_one_current_dataset(db_path, labels)
    rows, counts, seen = [], Counter(), set()
    for label in labels:
        pairs, ties = expand(label)
        counts["skipped"] += label["scores"] is None
        counts["tied_pairs"] += ties
        for c, r in pairs:
            key = (label["labeller"], min(c, r), max(c, r))
            counts["repeated"] += key in seen
            rows += [] if key in seen else [(c, r, label["labeller"])]
            seen.add(key)
    if not rows:
        raise DatasetFormatError(f"{db_path}: {len(labels)} label(s) but no strict preference (all ties or skips); "
                                 "nothing was written")
    write_preferences(out, [(c, r) for c, r, _ in rows], labeller=[who for _, _, who in rows],
                      dataset=labels[0]["dataset"])
    everyone = [r for r in read_labels(db_path) if r["dataset"] == labels[0]["dataset"]]
    return {"labels": len(labels), "comparisons": len(rows), "skipped": counts["skipped"],
            "tied_pairs_dropped": counts["tied_pairs"], "repeated_pairs_dropped": counts["repeated"],
            "undone_left_out": len(read_labels(db_path, labeller, include_undone=True)) - len(labels),
            "labellers": sorted({r[2] for r in rows}), "dataset": labels[0]["dataset_path"],
            "dataset_fingerprint": labels[0]["dataset"], "agreement": agreement(everyone), "out": str(out)}


def check_one_current_dataset(db_path, labels) -> None:
    """Refuse labels of a dataset regenerated (or removed) since they were made, or of several datasets."""
    stale = stale_datasets(labels)
    if stale:
        path, why = stale[0]
        raise DatasetFormatError(
            f"{db_path}: {why}; their episode ids may now name other episodes, so nothing was written. Fix: "
            f"restore the dataset those labels were made on at {path}, or label the new one in a fresh database "
            f"(`hf-agents label {path} --db NEW.sqlite`) and export that")
    if len({r["dataset"] for r in labels}) > 1:
        datasets = sorted({r["dataset_path"] for r in labels})
        raise DatasetFormatError(f"{db_path}: labels of several datasets {datasets}; export one labeller's "
                                 "(--labeller) or keep one database per dataset")
