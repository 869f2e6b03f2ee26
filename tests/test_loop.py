"""The designer's loop (`stage: align_loop`): rounds of roll out -> label -> reward model -> train -> evaluate, on a
toy game where a random agent reaches both outcomes, with the oracle and with a labelling-app database."""

import json

import pytest
import yaml

from hf_agents.cli import main as cli
from hf_agents.data import load_trajectories
from hf_agents.data.labels import LabelStore
from hf_agents.locations import RECIPES
from hf_agents.training import launch
from hf_agents.training.loop import ROUND_IDS
from tests.conftest import make_tiny_agent
from tests.toy_games import CORRIDOR_ID

TINY = {"max_episode_steps": 12, "num_envs": 2, "rollouts_per_round": 8, "eval_episodes": 4, "report_to": ["none"],
        "reward_overrides": ["num_train_epochs=2", "eval_fraction=0.25", "use_cpu=true"],
        "preference_ft_overrides": ["rollout_episodes=4", "max_steps=2", "per_device_train_batch_size=2",
                                    "context_length=8", "use_cpu=true"],
        "align_overrides": ["num_updates=1", "episodes_per_update=4", "rloo_k=2", "save_steps=1"]}


def loop(tmp_path, *overrides, command=launch.main):
    """The shipped loop recipe at toy size on the Corridor game, with a tiny untrained agent."""
    if not (tmp_path / "sft").exists():
        make_tiny_agent().save_pretrained(tmp_path / "sft")
    recipe = {**yaml.safe_load((RECIPES / "align_loop.yaml").read_text()), **TINY}
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(recipe))
    return command([str(tmp_path / "loop.yaml"), f"agent={tmp_path / 'sft'}", f"env={CORRIDOR_ID}",
                    "target=goal", f"output_dir={tmp_path / 'loop'}", *overrides])


def align_loop_command(args) -> int:
    """`hf-agents align loop ...`."""
    try:
        return cli(["align", "loop", *args])
    except SystemExit as stop:
        return stop.code


@pytest.mark.slow
def test_three_oracle_rounds_each_retrain_on_all_rollouts_and_go_on_from_the_last_adapter(tmp_path):
    assert loop(tmp_path, "rounds=3", command=align_loop_command) == 0
    history = json.loads((tmp_path / "loop" / "history.json").read_text())
    assert [h["round"] for h in history] == [1, 2, 3]
    assert all("success_goal" in h and h["comparisons"] > 0 for h in history)
    merged = load_trajectories(tmp_path / "loop" / "round-3" / "all-rollouts")  # every round's rollouts so far
    assert len(merged) == 3 * 8 and {m["episode_id"] // ROUND_IDS for m in merged.episodes} == {1, 2, 3}
    for r in (2, 3):  # each round's preference fine-tuning goes on from the previous round's adapter
        made = json.loads((tmp_path / "loop" / f"round-{r}" / "preference-ft" / "train_results.json").read_text())
        assert made["config"]["init_adapter"] == str(tmp_path / "loop" / f"round-{r - 1}" / "align")
    assert (tmp_path / "loop" / "round-3" / "eval" / "eval.json").exists()


@pytest.mark.slow
def test_a_round_waits_for_the_designers_labels_and_goes_on_when_they_are_there(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output_dir relative, as in the shipped recipe; the app records absolute paths
    db = tmp_path / "labels.sqlite"
    args = ["labeller=app", f"label_db={db}", "rounds=1", "output_dir=loop"]
    assert loop(tmp_path, *args) == 2  # round 1 rolled out, nothing labelled yet: stop and say how to go on
    assert "hf-agents label" in capsys.readouterr().err and not (tmp_path / "loop" / "round-1" / "reward").exists()
    rollouts = tmp_path / "loop" / "round-1" / "rollouts"
    data = load_trajectories(rollouts)
    from hf_agents.locations import fingerprint

    store = LabelStore(db, fingerprint(rollouts), str(rollouts.resolve()), [m["episode_id"] for m in data.episodes])
    ids = [m["episode_id"] for m in data.episodes]
    for a, b in zip(ids[::2], ids[1::2]):
        store.add("alice", "pair", [a, b], [1, 0])
    assert loop(tmp_path, *args, "resume=true") == 0
    history = json.loads((tmp_path / "loop" / "history.json").read_text())
    assert history[0]["comparisons"] == len(ids) // 2


def test_a_target_the_game_does_not_report_is_refused_before_any_work(tmp_path, capsys):
    assert loop(tmp_path, "target=treasure") == 2
    assert "not an outcome of this game" in capsys.readouterr().err and not (tmp_path / "loop").exists()
    # `hf-agents align loop` without a recipe takes the shipped one, and checks the same way
    assert align_loop_command([f"agent={tmp_path / 'sft'}", f"env={CORRIDOR_ID}", "target=treasure",
                               f"output_dir={tmp_path / 'loop'}"]) == 2
    assert "not an outcome of this game" in capsys.readouterr().err and not (tmp_path / "loop").exists()
