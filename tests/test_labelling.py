"""The designers' labelling app: durable store, pair choice, the page in a real headless Chromium, a killed
server, 8 concurrent labellers, what the server refuses, and the loop from labels to a reward model."""

import itertools
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from hf_agents.data import load_trajectories
from hf_agents.labelling import LabelError, LabelStore, export_preferences, read_labels
from hf_agents.labelling.choose import PairChooser
from tests.conftest import write_test_dataset
from tests.labelling_load import Server, call, label_concurrently, running, status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def pairs_of(path):
    table = pq.read_table(path)
    return list(zip(table.column("chosen").to_pylist(), table.column("rejected").to_pylist(),
                    table.column("labeller").to_pylist()))


def test_store_expands_rankings_drops_ties_and_refuses_bad_labels(tmp_path, rng):
    store = LabelStore(tmp_path / "labels.sqlite", "fp", "ds", range(10))
    store.add("alice", "pair", [3, 4], [1, 0])  # 3 better
    store.add("alice", "pair", [5, 6], [0, 1])  # 6 better
    store.add("alice", "pair", [1, 2], [0, 0])  # tie
    store.add("alice", "pair", [7, 8], None)  # skip
    store.add("bob", "ranking", [0, 1, 2, 9], [3, 1, 3, 2])  # 0 = 2 > 9 > 1: 5 strict pairs, 1 tie
    with pytest.raises(LabelError, match=r"episode\(s\) \[42\] are not in the dataset ds"):
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
    with sync_playwright() as p, running(server):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})

        def episodes(view):
            page.wait_for_selector(f"{view} .hfa-group video")
            return [int(e) for e in page.get_attribute(f"{view} .hfa-group", "data-episodes").split(",")]

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
