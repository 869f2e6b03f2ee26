"""The designers' labelling app: durable store, undo with an audit trail, agreement, refused (poisoned) labels,
pair choice, the page in a real headless Chromium, a killed server, 8 concurrent labellers, what the server
refuses, and the loop from labels to a reward model."""

import itertools
import json
import math
import re
import shutil
import urllib.error
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest

from hf_agents.data import load_trajectories
from hf_agents.data.labels import agreement, label_summary
from hf_agents.data.schema import DatasetFormatError
from hf_agents.labelling import LabelError, LabelStore, export_preferences, read_labels
from hf_agents.labelling.app import LabellingApp, done_text, progress_text
from hf_agents.labelling.choose import PairChooser
from hf_agents.locations import fingerprint
from tests.conftest import write_test_dataset
from tests.labelling_load import Server, call, label_concurrently, running, status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def shown_episodes(page, view: str) -> list[int]:
    """The episode ids of the videos a view shows, left to right (once they are there)."""
    page.wait_for_selector(f"{view} video")
    return page.eval_on_selector_all(f"{view} video", "vs => vs.map(v => Number(v.dataset.episode))")


def pairs_of(path):
    table = pq.read_table(path)
    return list(zip(table.column("chosen").to_pylist(), table.column("rejected").to_pylist(),
                    table.column("labeller").to_pylist()))


OLD_SCHEMA = """
CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT, labeller TEXT NOT NULL, dataset TEXT NOT NULL,
    dataset_path TEXT NOT NULL, kind TEXT NOT NULL, episodes TEXT NOT NULL, scores TEXT, created REAL NOT NULL);
CREATE TABLE answered (labeller TEXT NOT NULL, dataset TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
    PRIMARY KEY (labeller, dataset, a, b));
"""


def dataset_store(tmp_path, episodes: int = 10, rng=0) -> LabelStore:
    """A label store over a real trajectory dataset of `episodes` episodes (ids 0, 1, ...)."""
    write_test_dataset(tmp_path / "ds", [4] * episodes, size=8, rng=rng)
    return LabelStore(tmp_path / "labels.sqlite", fingerprint(tmp_path / "ds"), str(tmp_path / "ds"), range(episodes))


def test_store_expands_rankings_drops_ties_and_refuses_bad_labels(tmp_path, rng):
    store = dataset_store(tmp_path, rng=rng)
    ds = str(tmp_path / "ds")
    store.add("alice", "pair", [3, 4], [1, 0])  # 3 better
    store.add("alice", "pair", [5, 6], [0, 1])  # 6 better
    store.add("alice", "pair", [1, 2], [0, 0])  # tie
    store.add("alice", "pair", [7, 8], None)  # skip
    store.add("bob", "ranking", [0, 1, 2, 9], [3, 1, 3, 2])  # 0 = 2 > 9 > 1: 5 strict pairs, 1 tie
    with pytest.raises(LabelError, match=rf"episode\(s\) \[42\] are not in the dataset {re.escape(ds)}"):
        store.add("alice", "pair", [1, 42], [1, 0])
    with pytest.raises(LabelError, match="already labelled the pair"):
        store.add("alice", "pair", [4, 3], [0, 1])  # the same pair, shown the other way round
    with pytest.raises(LabelError, match="needs 2 different episodes"):
        store.add("alice", "pair", [1, 1], [1, 0])
    with pytest.raises(LabelError, match="the labeller's name"):
        store.add(" ", "pair", [1, 5], [1, 0])
    assert store.count("alice") == 4 and store.count() == 5
    assert store.answered("alice") == {(3, 4), (5, 6), (1, 2), (7, 8)}
    summary = export_preferences(tmp_path / "labels.sqlite", tmp_path / "prefs.parquet")
    assert summary["comparisons"] == 2 + 5 and summary["skipped"] == 1 and summary["tied_pairs_dropped"] == 2
    assert set(pairs_of(tmp_path / "prefs.parquet")) == {
        (3, 4, "alice"), (6, 5, "alice"), (0, 1, "bob"), (0, 9, "bob"), (2, 1, "bob"), (2, 9, "bob"), (9, 1, "bob")}
    export_preferences(tmp_path / "labels.sqlite", tmp_path / "bob.parquet", labeller="bob")
    assert {who for *_, who in pairs_of(tmp_path / "bob.parquet")} == {"bob"}
    with pytest.raises(Exception, match="no labels by labeller 'carol'"):
        export_preferences(tmp_path / "labels.sqlite", tmp_path / "carol.parquet", labeller="carol")
    assert not (tmp_path / "carol.parquet").exists()


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, float("1e309")])
def test_store_refuses_scores_that_are_not_finite(tmp_path, score):
    store = dataset_store(tmp_path, 3)
    with pytest.raises(LabelError, match="is not a finite number .*give one finite score per episode"):
        store.add("alice", "pair", [0, 1], [score, 0.0])
    with pytest.raises(LabelError, match="is not a finite number"):
        store.add("alice", "ranking", [0, 1, 2], [1.0, score, 2.0])
    assert store.count() == 0 and store.answered("alice") == set()  # nothing half-stored


def test_store_never_stores_a_comparison_twice_for_one_labeller(tmp_path):
    store = dataset_store(tmp_path, 6)
    store.add("alice", "ranking", [0, 1, 2], [3, 2, 1])
    with pytest.raises(LabelError, match=r"already labelled the pair \[0, 1\] \(this ranking: \[1, 0, 2\]\)"):
        store.add("alice", "ranking", [1, 0, 2], [1, 2, 3])  # the same ranking posted again (reordered)
    with pytest.raises(LabelError, match=r"already labelled the pair \[1, 2\]"):
        store.add("alice", "ranking", [3, 2, 1], [1, 2, 3])  # a new ranking holding one judged pair
    with pytest.raises(LabelError, match=r"already labelled the pair \[0, 2\]"):
        store.add("alice", "pair", [2, 0], None)  # not even a skip
    store.add("bob", "ranking", [0, 1, 2], [1, 2, 3])  # another labeller may judge the same pairs
    assert store.count("alice") == 1 and store.answered("alice") == {(0, 1), (0, 2), (1, 2)}
    summary = export_preferences(tmp_path / "labels.sqlite", tmp_path / "prefs.parquet")
    assert summary["comparisons"] == 6 and summary["repeated_pairs_dropped"] == 0
    assert sorted(pairs_of(tmp_path / "prefs.parquet")) == sorted([
        (0, 1, "alice"), (0, 2, "alice"), (1, 2, "alice"), (1, 0, "bob"), (2, 0, "bob"), (2, 1, "bob")])


def test_undo_keeps_an_audit_trail_and_the_export_is_exactly_the_labels_not_undone(tmp_path):
    store = dataset_store(tmp_path, 6)
    db = tmp_path / "labels.sqlite"
    first = store.add("alice", "pair", [0, 1], [1, 0])
    store.add("bob", "pair", [2, 3], [1, 0])
    ranking = store.add("alice", "ranking", [2, 3, 4], [1, 2, 3])
    undone = store.undo("alice")  # her latest: the ranking, not bob's later-or-earlier label
    assert undone == {"id": ranking, "kind": "ranking", "episodes": [2, 3, 4], "scores": [1.0, 2.0, 3.0]}
    assert store.answered("alice") == {(0, 1)} and store.count("alice") == 1 and store.count() == 2
    again = store.add("alice", "ranking", [4, 3, 2], [1, 2, 3])  # the undone pairs can be judged afresh
    assert store.undo("carol") is None  # nothing to undo
    rows = {r["id"]: r for r in read_labels(db, include_undone=True)}
    assert len(rows) == 4 and rows[ranking]["undone_by"] == "alice" and rows[ranking]["undone_at"] > 0
    assert all(rows[i]["undone_at"] is None for i in rows if i != ranking)
    assert [r["id"] for r in read_labels(db)] == [first, rows[first]["id"] + 1, again]  # live ones only
    summary = export_preferences(db, tmp_path / "prefs.parquet")
    assert summary["labels"] == 3 == store.count() and summary["undone_left_out"] == 1
    assert sorted(pairs_of(tmp_path / "prefs.parquet")) == sorted([
        (0, 1, "alice"), (2, 3, "bob"), (3, 4, "alice"), (2, 4, "alice"), (2, 3, "alice")])  # not 4 > 3 > 2
    assert label_summary(db)["labellers"]["alice"] == {"labels": 2, "undone": 1, "skipped": 0}
    assert store.undo("alice")["id"] == again and store.undo("alice")["id"] == first and store.undo("alice") is None
    assert store.answered("alice") == set()
    export_preferences(db, tmp_path / "bob.parquet")
    assert pairs_of(tmp_path / "bob.parquet") == [(2, 3, "bob")]


def test_agreement_compares_labellers_on_the_pairs_they_share():
    label = lambda who, episodes, scores: {"labeller": who, "episodes": episodes, "scores": scores}  # noqa: E731
    labels = [label("alice", [1, 2], [1, 0]), label("bob", [2, 1], [0, 1]),  # agree: 1 better, shown either way
              label("alice", [3, 4], [1, 0]), label("bob", [3, 4], [0, 1]),  # disagree
              label("carol", [1, 2, 5], [0, 1, 1]),  # 2 better than 1 (against both), 2 = 5 (shared with no one)
              label("bob", [6, 7], None), label("alice", [6, 7], [1, 0])]  # a skip is no judgement
    found = agreement(labels)
    assert found["shared_pairs"] == 2 and found["judgements_compared"] == 4  # (1,2): 3 labellers; (3,4): 2
    assert found["agreement"] == pytest.approx(1 / 4)
    assert found["by_labeller"] == {"alice": {"compared": 3, "agreement": round(1 / 3, 4)},
                                    "bob": {"compared": 3, "agreement": round(1 / 3, 4)},
                                    "carol": {"compared": 2, "agreement": 0.0}}
    assert agreement(labels[:1]) == {"shared_pairs": 0, "judgements_compared": 0, "agreement": None,
                                     "by_labeller": {}}


def test_export_refuses_labels_of_a_dataset_regenerated_or_removed_since(tmp_path):
    store = dataset_store(tmp_path, 4)
    db, ds = tmp_path / "labels.sqlite", tmp_path / "ds"
    store.add("alice", "pair", [0, 1], [1, 0])
    shutil.rmtree(ds)
    write_test_dataset(ds, [5] * 4, size=8, rng=1)  # the same path and episode ids, other episodes
    with pytest.raises(DatasetFormatError, match=rf"{re.escape(str(db))}: 1 label\(s\) were made on {re.escape(str(ds))}, "
                                                 r"which has changed since .* Fix: restore .* --db NEW.sqlite"):
        export_preferences(db, tmp_path / "prefs.parquet")
    shutil.rmtree(ds)
    with pytest.raises(DatasetFormatError, match="which is gone"):
        export_preferences(db, tmp_path / "prefs.parquet")
    assert not (tmp_path / "prefs.parquet").exists()


def test_progress_is_capped_at_the_pairs_left_and_ends_in_a_done_state_with_the_next_commands(tmp_path):
    write_test_dataset(tmp_path / "ds", [4] * 6, size=8)  # 15 pairs
    app = LabellingApp(str(tmp_path / "ds"), str(tmp_path / "labels.sqlite"), "alice", target=100)
    assert app.progress("alice") | {"next": None} == {
        "labeller": "alice", "labelled": 0, "target": 15, "target_asked": 100, "pairs_left": 15, "pairs_total": 15,
        "done": False, "target_reached": False, "all_labellers": 0, "next": None}
    app.submit("alice", "ranking", app.next_ranking("alice"), [1, 2, 3, 4, 5])  # 10 pairs in one label
    assert app.progress("alice")["target"] == 1 + 5 and done_text(app.progress("alice")) == ""
    while (pair := app.next_pair("alice")) is not None:
        app.submit("alice", "pair", pair, [1, 0])
    p = app.progress("alice")
    assert (p["labelled"], p["target"], p["pairs_left"], p["done"]) == (6, 6, 0, True)  # never "6 of 100"
    assert p["next"][0] == f"hf-agents label export {tmp_path / 'labels.sqlite'} --labeller alice --out prefs-alice.parquet"
    assert p["next"][1].startswith(f"hf-agents train reward.yaml trajectories={tmp_path / 'ds'} ")
    assert "All labelled" in done_text(p) and p["next"][0] in done_text(p)
    assert export_preferences(tmp_path / "labels.sqlite", tmp_path / "prefs.parquet")["labels"] == p["labelled"]
    app.undo("alice")
    assert app.progress("alice")["done"] is False and app.next_pair("alice") is not None
    assert app.agreement("alice") is None and "agreement" not in progress_text(app.progress("alice"))
    for left_better in (True, False):  # bob judges two of alice's pairs (she preferred the left of each)
        pair = next(r["episodes"] for r in read_labels(tmp_path / "labels.sqlite", "alice")
                    if r["kind"] == "pair" and tuple(sorted(r["episodes"])) not in app.store.answered("bob"))
        app.submit("bob", "pair", pair, [1, 0] if left_better else [0, 1])
    assert app.agreement("alice") == {"compared": 2, "agreement": 0.5}
    assert "agreement with the other designers: <span id='agreement'>50%</span> of 2" in progress_text(
        app.progress("alice"), app.agreement("alice"))


def test_a_database_from_before_undo_opens_and_exports_each_comparison_once(tmp_path):
    """An older file: no undo columns, and a ranking stored over a pair its labeller had already judged."""
    import sqlite3

    write_test_dataset(tmp_path / "ds", [4] * 4, size=8)
    db, key = tmp_path / "old.sqlite", fingerprint(tmp_path / "ds")
    with sqlite3.connect(db) as old:
        old.executescript(OLD_SCHEMA)
        old.executemany("INSERT INTO labels (labeller, dataset, dataset_path, kind, episodes, scores, created) "
                        "VALUES ('alice', ?, ?, ?, ?, ?, 1.0)",
                        [(key, str(tmp_path / "ds"), "pair", "[0, 1]", "[1, 0]"),
                         (key, str(tmp_path / "ds"), "ranking", "[0, 1, 2]", "[1, 2, 3]")])  # (0, 1) again
    assert [r["undone_at"] for r in read_labels(db)] == [None, None]  # read before any upgrade
    summary = export_preferences(db, tmp_path / "prefs.parquet")
    assert summary["comparisons"] == 3 and summary["repeated_pairs_dropped"] == 1
    assert sorted(pairs_of(tmp_path / "prefs.parquet")) == [(0, 1, "alice"), (2, 0, "alice"), (2, 1, "alice")]
    store = LabelStore(db, key, str(tmp_path / "ds"), range(4))  # adds the undo columns
    assert store.undo("alice")["kind"] == "ranking"
    assert store.answered("alice") == {(0, 1)}  # the pair the first label still covers stays answered


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_labeller_name_is_refused_at_start(tmp_path, capsys, name):
    from hf_agents.cli import main

    write_test_dataset(tmp_path / "ds", [4] * 3, size=8)
    assert main(["label", str(tmp_path / "ds"), "--labeller", name, "--db", str(tmp_path / "l.sqlite")]) == 2
    assert "the labeller's name is empty: pass --labeller NAME" in capsys.readouterr().err
    with pytest.raises(LabelError, match="labeller's name is empty"):
        LabelStore(tmp_path / "l.sqlite", "fp", "ds", range(3)).undo(name)


def test_chooser_never_repeats_a_pair_and_asks_what_the_reward_model_is_least_sure_of():
    chooser, answered = PairChooser(range(7)), set()
    while (pair := chooser.pair(answered)) is not None:
        key = tuple(sorted(pair))
        assert key not in answered
        answered.add(key)
    assert len(answered) == 21  # every pair once, then nothing
    assert chooser.ranking(answered) is None
    ranking = chooser.ranking(set())
    assert len(ranking) == 5 and len(set(ranking)) == 5
    rewards = {0: 0.0, 1: 0.9, 2: 0.5, 3: 0.52, 4: 0.1}
    informative = PairChooser(rewards, rewards)
    assert set(informative.pair(set())) == {2, 3}  # the closest rewards: P(prefer) nearest 1/2
    assert set(informative.pair({(2, 3)})) == {0, 4}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `bash scripts/setup.sh` installs Debian's package")
def test_page_labels_pairs_and_a_ranking_and_a_killed_server_loses_nothing(tmp_path, jumppads_sft):
    from playwright.sync_api import sync_playwright

    server = Server(jumppads_sft, tmp_path / "labels.sqlite", "alice", "--target", "20")
    expected, shown = set(), []
    with sync_playwright() as p, running(server, wait=False):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)  # while the server starts
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        server.wait_until_up()

        def episodes(view):
            return shown_episodes(page, view)

        def acknowledged(n):  # the page shows the count only after the label is committed
            page.wait_for_function(f"document.querySelector('#labelled-count')?.innerText == '{n}'", timeout=60_000)

        page.goto(f"{server.url}/?labeller=alice")
        a, b = episodes("#pair-view")  # both videos play, in sync
        page.wait_for_function("[...document.querySelectorAll('#pair-view video')].every(v => v.currentTime > 0.2)",
                               timeout=60_000)
        times = page.evaluate("[...document.querySelectorAll('#pair-view video')].map(v => v.currentTime)")
        assert len(times) == 2 and abs(times[0] - times[1]) < 0.3, times
        page.click("#label-left")
        acknowledged(1)
        expected.add((a, b))
        shown.append((a, b))
        a, b = episodes("#pair-view")
        page.keyboard.press("d")  # right is better, from the keyboard
        acknowledged(2)
        expected.add((b, a))
        shown.append((a, b))
        shown.append(tuple(episodes("#pair-view")))
        page.click("#label-tie")
        acknowledged(3)
        shown.append(tuple(episodes("#pair-view")))
        page.keyboard.press("w")  # skip
        acknowledged(4)
        page.get_by_role("tab", name="Rank several").click()
        ranked = episodes("#rank-view")
        assert len(ranked) == 5
        for k, letter in enumerate("ABCDE"):  # later videos better: level k + 1
            page.locator(f"#rank-{letter}").get_by_label(str(k + 1)).check()
        page.click("#rank-submit")
        acknowledged(5)
        expected |= {(ranked[j], ranked[i]) for i, j in itertools.combinations(range(5), 2)}
        server.kill()  # kill -9 right after the acknowledgement

        server.start()
        page.goto(f"{server.url}/?labeller=alice")
        acknowledged(5)  # all five survived
        a, b = episodes("#pair-view")
        shown.append((a, b))
        page.screenshot(path=str(tmp_path / "page.png"))
        page.click("#label-left")
        acknowledged(6)
        expected.add((a, b))
        browser.close()
    pairs = [tuple(sorted(p)) for p in shown]
    assert len(set(pairs)) == len(pairs)  # never the same pair twice, before or after the restart
    assert not set(pairs) & {tuple(sorted(p)) for p in itertools.combinations(ranked, 2)}
    summary = export_preferences(tmp_path / "labels.sqlite", tmp_path / "prefs.parquet")
    assert summary["labels"] == 6 and summary["skipped"] == 1 and summary["tied_pairs_dropped"] == 1
    assert {(c, r) for c, r, _ in pairs_of(tmp_path / "prefs.parquet")} == expected


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `bash scripts/setup.sh` installs Debian's package")
def test_page_label_undo_label_until_done_and_the_export_is_exactly_what_is_shown(tmp_path, rng):
    """Pairs and a ranking from the keyboard, each undone once and labelled again, to the done state."""
    from playwright.sync_api import sync_playwright

    write_test_dataset(tmp_path / "ds", [8, 12, 9, 10], rng=rng)  # 6 pairs
    db = tmp_path / "labels.sqlite"
    expected = set()
    with sync_playwright() as p, running(Server(tmp_path / "ds", db, "alice"), wait=False) as (server,):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)  # while the server starts
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        server.wait_until_up()

        def acknowledged(n, note):  # the count and the note change only once the server has committed
            page.wait_for_function(f"document.querySelector('#labelled-count')?.innerText == '{n}'", timeout=60_000)
            page.wait_for_function("([sel, text]) => document.querySelector(sel)?.innerText.includes(text)",
                                   arg=["#status", note], timeout=60_000)

        def visible(selector) -> bool:
            return page.locator(selector).is_visible()

        page.goto(f"{server.url}/?labeller=alice")
        assert page.inner_text("#target") == "6"  # capped at the 6 pairs there are, not --target 100
        assert visible("#pair-keys") and not visible("#rank-keys")  # only the keys that work here
        a, b = shown_episodes(page, "#pair-view")
        captions = page.eval_on_selector_all("#pair-view figcaption", "fs => fs.map(f => f.innerText)")
        assert all(re.search(r"\d+ steps · \d\.\d s", c) for c in captions), captions
        assert page.eval_on_selector_all("#pair-view video", "vs => vs.every(v => v.controls)")
        for k, side in enumerate(("left", "right")):  # A's button under A, B's under B
            video = page.locator("#pair-view video").nth(k).bounding_box()
            button = page.locator(f"#label-{side}").bounding_box()
            assert video["x"] <= button["x"] + button["width"] / 2 <= video["x"] + video["width"], side
            assert button["y"] > video["y"] + video["height"] - 1, side
        page.select_option("#hfa-speed", "2")
        page.wait_for_function("[...document.querySelectorAll('#pair-view video')].every(v => v.playbackRate == 2)")
        page.wait_for_function("[...document.querySelectorAll('#pair-view video')].every(v => !v.paused)",
                               timeout=60_000)  # playing together: a pause before they start is undone by the start
        page.evaluate("() => { const v = document.querySelector('#pair-view video'); v.pause(); v.currentTime = 0.5; }")
        page.wait_for_function("[...document.querySelectorAll('#pair-view video')]"  # B follows A: paused at 0.5 s
                               ".every(v => v.paused && Math.abs(v.currentTime - 0.5) < 0.05)", timeout=10_000)
        page.keyboard.press("a")
        acknowledged(1, "Saved: A is better")
        page.keyboard.press("u")  # undo: the same pair again
        acknowledged(0, "Undid your pair label")
        assert shown_episodes(page, "#pair-view") == [a, b]
        page.keyboard.press("ArrowRight")  # now B is better
        acknowledged(1, "Saved: B is better")
        expected.add((b, a))

        page.get_by_role("tab", name="Rank several").click()
        ranked = shown_episodes(page, "#rank-view")
        page.wait_for_function("[...document.querySelectorAll('#rank-view video')].every(v => v.playbackRate == 2)")
        assert page.input_value("#hfa-speed") == "2"  # the chosen speed holds for new videos
        assert len(ranked) == 3 and visible("#rank-keys") and not visible("#pair-keys")
        for letter in "ABC":  # each level control sits under its own video
            video = page.locator("#rank-view video").nth("ABC".index(letter)).bounding_box()
            radio = page.locator(f"#rank-{letter}").bounding_box()
            assert video["x"] <= radio["x"] + radio["width"] / 2 <= video["x"] + video["width"], letter
            assert radio["y"] > video["y"] + video["height"] - 1, letter
        for key in "123":  # A = 1, B = 2, C = 3
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        acknowledged(2, "Saved your ranking of 3 videos: 3 comparisons")
        page.click("#label-undo")
        acknowledged(1, "Undid your ranking label")
        assert shown_episodes(page, "#rank-view") == ranked
        for key in ["c", "1", "a", "3", "b", "2"]:  # pick C, then A, then B: C = 1, A = 3, B = 2
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        acknowledged(2, "Saved your ranking of 3 videos")
        expected |= {(ranked[0], ranked[1]), (ranked[0], ranked[2]), (ranked[1], ranked[2])}

        page.get_by_role("tab", name="Compare two").click()  # a pair the ranking covered is replaced
        judged = {tuple(sorted(p)) for p in [(a, b), *itertools.combinations(ranked, 2)]}
        for n, key in ((3, "d"), (4, "s")):  # the last two pairs: B better, then a tie
            page.wait_for_function("judged => { const e = [...document.querySelectorAll('#pair-view video')]"
                                   ".map(v => Number(v.dataset.episode)).sort((x, y) => x - y);"
                                   " return e.length == 2 && !judged.some(([x, y]) => x == e[0] && y == e[1]); }",
                                   arg=[list(p) for p in judged], timeout=60_000)
            a, b = shown_episodes(page, "#pair-view")
            judged.add(tuple(sorted((a, b))))
            page.keyboard.press(key)
            acknowledged(n, "Saved:")
            expected |= {(b, a)} if key == "d" else set()
        page.wait_for_selector("#done h3")
        done = page.inner_text("#done")
        assert "All labelled" in done and f"hf-agents label export {db} --labeller alice" in done, done
        assert page.inner_text("#labelled-count") == page.inner_text("#target") == "4"
        assert not visible("#label-left") and not visible("#pair-view video")
        page.screenshot(path=str(tmp_path / "done.png"))
        browser.close()
    summary = export_preferences(db, tmp_path / "prefs.parquet")
    assert summary["labels"] == 4 and summary["undone_left_out"] == 2 and summary["tied_pairs_dropped"] == 1
    assert {(c, r) for c, r, _ in pairs_of(tmp_path / "prefs.parquet")} == expected and len(expected) == 5
    undone = [r for r in read_labels(db, include_undone=True) if r["undone_at"] is not None]
    assert [(r["kind"], r["undone_by"]) for r in undone] == [("pair", "alice"), ("ranking", "alice")]


@pytest.mark.slow
def test_eight_concurrent_labellers_on_two_servers_lose_no_label(tmp_path, rng):
    dataset = tmp_path / "ds"
    write_test_dataset(dataset, [8] * 30, rng=rng)  # 435 pairs: 250 each without repeats
    db = tmp_path / "labels.sqlite"
    with running(Server(dataset, db), Server(dataset, db)) as servers:
        report = label_concurrently([s.url for s in servers], labellers=8, labels=2000)
    print(json.dumps({k: v for k, v in report.items() if k != "ids"}))
    assert not report["errors"], report["errors"][:3]
    assert report["labels_acknowledged"] == 2000
    labels = read_labels(db)
    assert sorted(r["id"] for r in labels) == sorted(report["ids"])
    for name in {r["labeller"] for r in labels}:  # no labeller saw a pair twice
        mine = [tuple(sorted(r["episodes"])) for r in labels if r["labeller"] == name]
        assert len(mine) == len(set(mine)) == 250
    assert export_preferences(db, tmp_path / "prefs.parquet")["comparisons"] == 2000


@pytest.mark.slow
def test_server_serves_only_its_dataset_and_needs_a_token_beyond_loopback(tmp_path, rng, capsys):
    from hf_agents.cli import main

    dataset = tmp_path / "ds"
    write_test_dataset(dataset, [8] * 4, rng=rng)
    (tmp_path / "secret.txt").write_text("not for the browser")
    assert main(["label", str(dataset), "--labeller", "x", "--host", "0.0.0.0", "--db", str(tmp_path / "l.sqlite")]) == 2
    assert "pass --token" in capsys.readouterr().err
    with running(Server(dataset, tmp_path / "labels.sqlite", "alice", "--token", "s3cret")) as (server,):
        auth = {"authorization": "Bearer s3cret"}
        assert status(server.url, "/api/progress?labeller=a")[0] == 401
        assert status(server.url, "/?labeller=alice")[0] == 401
        assert status(server.url, "/?labeller=alice&token=s3cret")[0] == 200
        assert status(server.url, "/videos/0.webm", headers=auth)[0] == 200
        for path in ("/videos/4.webm", "/videos/..%2Fsecret.txt", "/videos/%2E%2E/%2E%2E/secret.txt",
                     f"/gradio_api/file={tmp_path / 'secret.txt'}", f"/file={tmp_path / 'secret.txt'}",
                     "/videos/0.webm/../../secret.txt"):
            code, body = status(server.url, path, headers=auth)
            assert code in (400, 403, 404), (path, code)
            assert b"not for the browser" not in body
        code, body = status(server.url, "/api/labels", {"labeller": "a", "episodes": [0, 77], "scores": [1, 0]}, auth)
        assert code == 400 and b"[77] are not in the dataset" in body
        assert call(server.url, "/api/progress?labeller=a&token=s3cret")["labelled"] == 0


def upload(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    """POST one file to Gradio's upload route, as its file widgets do."""
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.html\"\r\n"
            b"Content-Type: text/html\r\n\r\n<script>alert(1)</script>\r\n--b--\r\n")
    request = urllib.request.Request(url + "/gradio_api/upload", data=body, method="POST",
                                     headers={"content-type": "multipart/form-data; boundary=b", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_server_refuses_uploads_other_hosts_and_poisoned_labels(tmp_path, rng):
    dataset = tmp_path / "ds"
    write_test_dataset(dataset, [8] * 4, rng=rng)
    db = tmp_path / "labels.sqlite"
    with running(Server(dataset, db, "alice")) as (server,):
        port = server.port
        code, body = upload(server.url)
        assert code == 403 and b"takes no files" in body, (code, body[:200])
        assert status(server.url, "/gradio_api/upload_progress?upload_id=x")[0] == 403
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "", "attacker.localhost"):
            code, body = status(server.url, "/api/progress?labeller=a", headers={"Host": host})
            assert code == 400 and b"DNS rebinding" in body, (host, code, body)
        assert status(server.url, "/", headers={"Host": f"evil.example:{port}"})[0] == 400  # the page too
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
            assert status(server.url, "/api/progress?labeller=a", headers={"Host": host})[0] == 200, host

        def post(text: str) -> tuple[int, bytes]:
            return status(server.url, "/api/labels", text)

        for score in ("NaN", "Infinity", "-Infinity", "1e309"):
            code, body = post(f'{{"labeller": "a", "episodes": [0, 1], "scores": [{score}, 0]}}')
            assert code == 400 and b"is not a finite number" in body, (score, code, body)
        code, body = post('{"labeller": "a", "episodes": [1, 1], "scores": [1, 0]}')  # chosen == rejected
        assert code == 400 and b"needs 2 different episodes, got [1, 1]" in body
        code, body = post('{"labeller": " ", "episodes": [0, 1], "scores": [1, 0]}')
        assert code == 400 and b"labeller's name is empty" in body
        ranking = '{"labeller": "a", "kind": "ranking", "episodes": [0, 1, 2], "scores": [3, 2, 1]}'
        assert post(ranking)[0] == 200
        code, body = post(ranking)  # posted twice
        assert code == 400 and b"already labelled the pair" in body
        code, body = post('{"labeller": "a", "kind": "ranking", "episodes": [3, 0, 1], "scores": [1, 2, 3]}')
        assert code == 400 and b"already labelled the pair [0, 1]" in body  # holds a judged pair
        assert post('{"labeller": "a", "kind": "ranking", "episodes": [3, 2], "scores": [1, 2]}')[0] == 200
        assert call(server.url, "/api/progress?labeller=a")["labelled"] == 2
        undone = call(server.url, "/api/undo", {"labeller": "a"})
        assert undone["undone"]["episodes"] == [3, 2] and undone["labelled"] == 1
        summary = call(server.url, "/api/summary")
        assert summary["labellers"] == {"a": {"labels": 1, "undone": 1, "skipped": 0}}
    found = export_preferences(db, tmp_path / "prefs.parquet")
    assert found["labels"] == 1 and found["undone_left_out"] == 1 and found["comparisons"] == 3
    assert sorted(pairs_of(tmp_path / "prefs.parquet")) == [(0, 1, "a"), (0, 2, "a"), (1, 2, "a")]


def test_designer_loop_labels_to_a_reward_model_that_picks_the_next_pairs(tmp_path, jumppads_sft):
    """label -> export one designer's labels -> reward stage -> label again, led by that reward model."""
    from hf_agents.labelling.app import LabellingApp
    from hf_agents.training.launch import main

    app = LabellingApp(str(jumppads_sft), str(tmp_path / "labels.sqlite"), "alice")
    outcome = {m["episode_id"]: m["outcome"] for m in load_trajectories(jumppads_sft).episodes}
    taste = {"left": 2, "middle": 1, "right": 0}  # alice likes the left pad
    while (pair := app.next_pair("alice")) is not None:
        app.submit("alice", "pair", pair, [taste[outcome[e]] for e in pair])
        app.submit("bob", "pair", pair, [1, 0])  # another designer in the same database
    assert export_preferences(tmp_path / "labels.sqlite", tmp_path / "prefs.parquet")["comparisons"] > 30
    code = main(["stage=reward", f"trajectories={jumppads_sft}", f"preferences={tmp_path / 'prefs.parquet'}",
                 "labeller=alice", "encoder=random", f"output_dir={tmp_path / 'rm-alice'}", "eval_fraction=0",
                 "per_device_train_batch_size=32", "num_train_epochs=60", "learning_rate=3e-3", "l2_penalty=0.01",
                 "report_to=none", "disable_tqdm=true",
                 "save_strategy=no", "seed=0"])
    assert code == 0
    led = LabellingApp(str(jumppads_sft), str(tmp_path / "labels2.sqlite"), "alice",
                       reward_model=str(tmp_path / "rm-alice"))
    rewards = led.chooser.rewards
    by_pad = {pad: np.mean([r for e, r in rewards.items() if outcome[e] == pad]) for pad in taste}
    assert by_pad["left"] > by_pad["middle"] > by_pad["right"], by_pad  # it learnt alice's taste
    first = led.next_pair("alice")
    gaps = [abs(rewards[i] - rewards[j]) for i, j in itertools.combinations(rewards, 2)]
    assert abs(rewards[first[0]] - rewards[first[1]]) == pytest.approx(min(gaps))
