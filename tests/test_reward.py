"""Preferences and the reward model: synthetic oracle, file format, model pieces, and real training."""

import functools
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from hf_agents.data import DatasetFormatError, TrajectoryWriter, load_trajectories
from hf_agents.data.preferences import read_preferences, synthetic_preferences, write_preferences
from hf_agents.frames import to_model
from hf_agents.models import AgentConfig, AgentModel, TrajectoryRewardConfig, TrajectoryRewardModel
from hf_agents.models.modeling_reward import padding_to_front
from hf_agents.training.common import RecipeError, parse_recipe
from hf_agents.training.launch import main
from tests.conftest import make_tiny_agent


def _episode(i, outcome, steps):
    return {"episode_id": i, "outcome": outcome, "outcome_step": steps - 1 if outcome != "none" else -1,
            "length": steps}


def test_synthetic_oracle_ranks_like_the_paper():
    eps = [_episode(0, "left", 40), _episode(1, "left", 30), _episode(2, "middle", 20), _episode(3, "none", 100),
           _episode(4, "right", 20)]
    pairs = set(synthetic_preferences(eps, "left"))
    assert (1, 0) in pairs  # same pad: shorter wins
    assert (0, 2) in pairs and (0, 3) in pairs  # the given pad beats another pad and no pad
    assert (2, 3) in pairs  # another pad beats no pad
    assert (2, 4) not in pairs and (4, 2) not in pairs  # a tie gives no comparison
    assert len(pairs) == 9
    assert len(synthetic_preferences(eps, "left", max_comparisons=4)) == 4
    # no pad reached: a fall after 12 steps and a timeout tie (falling sooner is not better)
    falls = [_episode(5, "none", 12), _episode(6, "none", 100)]
    assert synthetic_preferences(falls, "left") == []


def test_sweep_samples_comparisons_from_pairs_or_from_a_subset_of_trajectories():
    from hf_agents.training.reward_sweep import RewardSweepConfig, _sample

    outcomes = ["left", "middle", "right", "none"]
    eps = [_episode(i, outcomes[i % 4], 20 + i) for i in range(200)]
    by_pairs, by_trajectories = (_sample(s, eps, "left", 100, seed=1) for s in ("pairs", "trajectories"))
    assert len(by_pairs) == len(by_trajectories) == 100
    used = lambda pairs: {i for pair in pairs for i in pair}  # noqa: E731
    assert len(used(by_pairs)) > 100  # 100 pairs drawn from 200 trajectories touch most of them
    subset = used(by_trajectories)
    assert len(subset) <= 17  # the paper's way: ~100 comparisons among ~15 trajectories
    order = [eps[i] for i in np.random.default_rng(1).permutation(len(eps))]
    k = next(k for k in range(2, len(eps)) if len(synthetic_preferences(order[:k], "left")) >= 100)
    assert subset <= {e["episode_id"] for e in order[:k]}  # within the seeded order's fewest that give 100
    with pytest.raises(ValueError, match="sampling='episodes'"):
        RewardSweepConfig(trajectories="t", output_dir="o", sampling="episodes")


def test_preferences_file_round_trip_and_errors(tmp_path):
    path = write_preferences(tmp_path / "p.parquet", [(1, 2), (3, 2)], "designer-a")
    assert read_preferences(path, episode_ids=[1, 2, 3]) == [(1, 2), (3, 2)]
    with pytest.raises(DatasetFormatError, match="not in the trajectory dataset"):
        read_preferences(path, episode_ids=[1, 2])
    with pytest.raises(TypeError):  # a failed write leaves the old file as it was
        write_preferences(path, [(object(), 1)], "x")
    assert read_preferences(path) == [(1, 2), (3, 2)]
    pq.write_table(pa.table({"winner": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(DatasetFormatError, match="bad.parquet.*missing column"):
        read_preferences(tmp_path / "bad.parquet")


def test_agent_embeddings_use_the_acting_context_and_padding():
    agent = make_tiny_agent(context_length=32)
    assert TrajectoryRewardModel.from_agent(agent).config.padding_side == "left"  # the default: padding in front
    model = TrajectoryRewardModel.from_agent(agent, padding_side="right").eval()
    frames = torch.randint(0, 256, (2, 50, 3, 32, 32), dtype=torch.uint8)
    actions = torch.randint(0, 2, (2, 50, 16))
    emb = model.embed(frames, actions, torch.tensor([50, 20]))
    assert emb.shape == (2, 100, 64)
    with torch.no_grad():
        # steps 0-31 see the episode from its start; steps 32-47 see steps 16..t (the policy's slide)
        assert torch.allclose(emb[0, :32], agent(frames[:1, :32], actions[:1, :32]).last_hidden_state[0], atol=1e-5)
        later = agent(frames[:1, 16:48], actions[:1, 16:48]).last_hidden_state[0, 16:]
        assert torch.allclose(emb[0, 32:48], later, atol=1e-5)
    # a 20-step trajectory is padded with black frames: what follows its end does not matter
    alone = model.embed(frames[1:, :20], actions[1:, :20])
    assert torch.allclose(emb[1], alone[0], atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])
    # padded in front: the same embeddings, each trajectory's last step at the last position
    left = TrajectoryRewardModel.from_agent(agent).eval()
    in_front = left.embed(frames, actions, torch.tensor([50, 20]))
    for i, length in enumerate((50, 20)):
        assert torch.allclose(in_front[i, 100 - length:], emb[i, :length], atol=1e-5)
        assert torch.allclose(in_front[i, :100 - length], emb[i, length:], atol=1e-5)
    with pytest.raises(ValueError, match="padding_side"):
        TrajectoryRewardModel.from_agent(agent, padding_side="middle")


@pytest.mark.parametrize("encoder,layer,side", [("random", None, "right"), ("random", None, "left"),
                                                 ("agent", "frames", "right"), ("agent", "last", "left")])
def test_embeddings_equal_encoding_every_padded_frame(encoder, layer, side):
    """Only the real frames and one black frame are encoded: the embeddings are those of encoding each of the
    max_steps frames, black after each trajectory's end."""
    torch.manual_seed(0)
    if encoder == "agent":
        agent = make_tiny_agent(context_length=32)
        with torch.no_grad():  # non-zero biases, as after training: a black frame then embeds to a non-zero vector
            for p in agent.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model = TrajectoryRewardModel.from_agent(agent, agent_layer=layer, padding_side=side, max_steps=60).eval()
    else:
        model = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=32, padding_side=side,
                                                             max_steps=60)).eval()
    frames = torch.randint(0, 256, (3, 40, 3, 32, 32), dtype=torch.uint8)
    actions = torch.randint(0, 2, (3, 40, 16))
    lengths = torch.tensor([40, 25, 7])
    padded = torch.zeros(3, 60, 3, 32, 32, dtype=torch.uint8)
    for i, n in enumerate(lengths.tolist()):
        padded[i, :n] = frames[i, :n]
    with torch.no_grad():
        if encoder == "random":
            every = model.projection(padded.flatten(2).float() / 255)
        elif layer == "frames":
            every = agent.embed_frames(padded)
        else:
            every = agent.sliding_hidden(padded, model.pad_actions(frames, actions, lengths)[0])
    if side == "left":
        every = padding_to_front(every, lengths)
    torch.testing.assert_close(model.embed(frames, actions, lengths), every, atol=1e-5, rtol=1e-4)


def test_agent_layer_picks_the_representation_that_embeds_each_step():
    agent = make_tiny_agent(context_length=32).eval()
    frames = torch.randint(0, 256, (1, 20, 3, 32, 32), dtype=torch.uint8)
    actions = torch.randint(0, 2, (1, 20, 16))
    embed = lambda layer: TrajectoryRewardModel.from_agent(  # noqa: E731
        agent, agent_layer=layer, padding_side="right").eval().embed(frames, actions)[0, :20]
    with torch.no_grad():
        assert torch.allclose(embed("frames"), agent.embed_frames(frames)[0], atol=1e-5)  # the frame encoder alone
        assert torch.allclose(embed("last"), agent(frames, actions).last_hidden_state[0], atol=1e-5)
        tokens = agent.interleave(agent.embed_frames(frames), agent.embed_actions(actions))
        states = agent.backbone(inputs_embeds=tokens, output_hidden_states=True).hidden_states
        assert torch.allclose(embed("block-0"), states[0][0, 0::2], atol=1e-5)  # GPT2's input (with positions)
        assert torch.allclose(embed("block-1"), states[1][0, 0::2], atol=1e-5)
    inner = embed(f"block-{agent.config.num_layers - 1}")
    assert not torch.allclose(inner, embed("last")) and not torch.allclose(inner, embed("block-0"))
    with pytest.raises(ValueError, match="agent_layer"):
        TrajectoryRewardModel.from_agent(agent, agent_layer=f"block-{agent.config.num_layers}")


def test_reward_model_save_load_and_bad_input(tmp_path):
    model = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=32, reward_min=-1.0,
                                                         reward_max=3.0)).eval()
    frames = torch.randint(0, 256, (3, 12, 3, 32, 32), dtype=torch.uint8)
    rewards = model(frames=frames).logits
    assert rewards.shape == (3, 1)
    model.save_pretrained(tmp_path / "rm")
    assert (tmp_path / "rm" / "model.safetensors").exists()
    for auto in (AutoModel, AutoModelForSequenceClassification):
        again = auto.from_pretrained(tmp_path / "rm").eval()
        assert isinstance(again, TrajectoryRewardModel)
        assert torch.equal(again(frames=frames).logits, rewards)  # the frozen projection is saved too
    assert model.normalized_reward(torch.tensor([-3.0, 1.0, 5.0])).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="exceed the reward model's max_steps=100"):
        model(frames=torch.zeros(1, 101, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="embeddings must be"):
        model(embeddings=torch.zeros(1, 100, 7))
    with pytest.raises(ValueError, match="needs the agent's config"):
        TrajectoryRewardConfig(encoder="agent")


def test_embeddings_are_standardised_over_the_real_steps(tmp_path):
    torch.manual_seed(0)
    model = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=32, padding_side="left")).eval()
    frames = torch.randint(0, 256, (3, 12, 3, 32, 32), dtype=torch.uint8)
    lengths = torch.tensor([12, 5, 8])
    before = model(frames=frames, lengths=lengths).logits
    emb = model.embed(frames, None, lengths)
    model.standardize(emb, lengths)
    real = emb[torch.arange(100)[None] >= 100 - lengths[:, None]]  # 25 real steps, after the black padding
    z = (real - model.embedding_mean) / model.embedding_std
    assert torch.allclose(z.mean(0), torch.zeros(512), atol=1e-4) and torch.allclose(z.std(0), torch.ones(512), atol=1e-3)
    after = model(frames=frames, lengths=lengths).logits
    assert not torch.allclose(after, before)  # forward applies it
    model.save_pretrained(tmp_path / "rm")
    again = AutoModel.from_pretrained(tmp_path / "rm").eval()
    assert torch.equal(again.embedding_std, model.embedding_std)  # saved with the weights
    assert torch.equal(again(frames=frames, lengths=lengths).logits, after)


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """On-policy-style rollouts in the evaluation setting (scripted players: a mix of pads) and left-pad prefs."""
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads.env import make_jumppads
    from hf_agents.games.jumppads.population import ScriptedPopulation
    from hf_agents.rollout.engine import rollout

    root = tmp_path_factory.mktemp("reward")
    env_fn = functools.partial(make_jumppads, frame_size=32, max_steps=100)
    with BatchedEnv(env_fn, 2) as venv, TrajectoryWriter(root / "rollouts", frame_size=32) as writer:
        rollout(venv, ScriptedPopulation(2, seed=3), 60, seed=3, writer=writer, progress=False)
    episodes = load_trajectories(root / "rollouts").episodes
    assert Counter(e["outcome"] for e in episodes)["left"] >= 4
    write_preferences(root / "left.parquet", synthetic_preferences(episodes, "left"), "synthetic:left")
    return root


# Held-out accuracy on 18 trajectories varies a lot with the split (and the test agent is untrained), so the bar
# is "well above chance"; the paper's comparison of the two encoders is the demo's reward table.
@pytest.mark.parametrize("encoder,padding_side", [("random", "right"), ("agent", "right"), ("random", "left")])
def test_reward_model_learns_the_preferences(rollouts, tmp_path, encoder, padding_side):
    extra = []
    if encoder == "agent":
        make_tiny_agent(context_length=32).save_pretrained(tmp_path / "agent")
        extra = [f"agent={tmp_path / 'agent'}"]
    out = tmp_path / "rm"
    # ~240 updates: a lighter L2 than the paper's 0.1, which comes with 200 epochs of far more comparisons
    code = main(["stage=reward", f"trajectories={rollouts / 'rollouts'}", f"preferences={rollouts / 'left.parquet'}",
                 f"encoder={encoder}", f"padding_side={padding_side}", f"output_dir={out}",
                 "per_device_train_batch_size=64", "num_train_epochs=20",
                 "eval_fraction=0.3", "seed=1", "l2_penalty=0.01", "eval_strategy=epoch", "save_strategy=no", "report_to=none",
                 "logging_steps=20", "disable_tqdm=true", *extra])
    assert code == 0
    results = json.loads((out / "train_results.json").read_text())
    losses = [h["loss"] for h in results["log_history"] if "loss" in h]
    assert losses[-1] < losses[0] * 0.9, losses  # the Bradley-Terry loss goes down
    metrics = results["metrics"]
    assert metrics["eval_comparisons"] > 10
    # `num_tokens` (TRL's name, kept): padded trajectory steps trained on, both sides of every comparison
    assert metrics["eval_num_tokens"] == 20 * metrics["train_comparisons"] * 2 * 100
    assert metrics["eval_accuracy"] >= 0.65, metrics  # held-out trajectories, never trained on
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the reward-model card, not a generic text-model one
    assert "pipeline(" not in card.text and "reward-model" in card.data.tags
    assert card.data.eval_results[0].metric_value == pytest.approx(metrics["eval_accuracy"], abs=1e-4)
    assert card.data.base_model is None  # a local agent is never named as a Hub id
    # the saved model loads through the Auto class and scores raw trajectories (frames in, embedded inside) as
    # training scored the cached embeddings; its normalisation maps the training trajectories onto [0, 1]
    model = AutoModel.from_pretrained(out).eval()
    assert model.config.reward_min == pytest.approx(metrics["reward_min"])
    data = load_trajectories(rollouts / "rollouts")
    with torch.no_grad():
        def score(i):
            steps = data.read(i)
            r = model(frames=to_model(steps["frames"][None]), actions=torch.from_numpy(steps["actions"][None]))
            return float(r.logits[0, 0])
        raw = {e["episode_id"]: score(i) for i, e in enumerate(data.episodes)}
    cached = model(embeddings=model.embed_dataset(data, progress=False)).logits[:, 0]
    assert torch.allclose(torch.tensor(list(raw.values())), cached, rtol=1e-4, atol=1e-6)
    train, _ = data.split(0.3, seed=1)
    normalised = model.normalized_reward(torch.tensor([raw[e["episode_id"]] for e in train.episodes]))
    assert normalised.min().item() == pytest.approx(0.0, abs=1e-4) and normalised.max().item() == pytest.approx(1.0, abs=1e-4)


def test_reward_recipe_errors_before_training(rollouts, tmp_path):
    with pytest.raises(RecipeError, match="`preferences` is required"):
        parse_recipe(None, ["stage=reward", f"trajectories={rollouts / 'rollouts'}"])
    with pytest.raises(RecipeError, match="encoder must be one of"):
        parse_recipe(None, ["stage=reward", "trajectories=x", "preferences=y", "encoder=resnet"])
    with pytest.raises(RecipeError, match="unknown stage 'rewards'"):
        parse_recipe(None, ["stage=rewards"])
    AgentModel(AgentConfig.from_preset("cpu")).save_pretrained(tmp_path / "agent64")
    code = main(["stage=reward", f"trajectories={rollouts / 'rollouts'}", f"preferences={rollouts / 'left.parquet'}",
                 f"agent={tmp_path / 'agent64'}", f"output_dir={tmp_path / 'rm'}", "report_to=none"])
    assert code == 2  # 32px rollouts, 64px agent: refused before any step
    assert not (tmp_path / "rm").exists() or not any((tmp_path / "rm").iterdir())


def test_preferences_made_on_another_version_of_the_dataset_are_refused(rollouts, tmp_path, capsys):
    import shutil

    from hf_agents.data.preferences import preferences_dataset
    from hf_agents.locations import fingerprint

    data = tmp_path / "rollouts"
    shutil.copytree(rollouts / "rollouts", data)
    pairs = read_preferences(rollouts / "left.parquet")
    write_preferences(tmp_path / "left.parquet", pairs, "synthetic:left", dataset=data)
    assert preferences_dataset(tmp_path / "left.parquet") == fingerprint(data)
    info = json.loads((data / "meta" / "info.json").read_text())
    (data / "meta" / "info.json").write_text(json.dumps({**info, "description": "regenerated"}))  # another version
    code = main(["stage=reward", f"trajectories={data}", f"preferences={tmp_path / 'left.parquet'}", "encoder=random",
                 f"output_dir={tmp_path / 'rm'}", "report_to=none"])
    assert code == 2 and "made on another version" in capsys.readouterr().err
    assert not (tmp_path / "rm").exists() or not any((tmp_path / "rm").iterdir())


@pytest.mark.slow
def test_killed_reward_run_resumes_to_the_same_weights(rollouts, tmp_path):
    from tests.test_training import assert_kill_and_resume_matches

    args = ["stage=reward", f"trajectories={rollouts / 'rollouts'}", f"preferences={rollouts / 'left.parquet'}",
            "encoder=random", "per_device_train_batch_size=32", "num_train_epochs=2", "eval_fraction=0.3",
            "save_strategy=steps", "save_steps=5", "eval_strategy=no", "report_to=none", "disable_tqdm=true"]
    assert_kill_and_resume_matches(args, tmp_path, "checkpoint-10")  # in the first of 2 epochs of ~25 steps
    config = lambda d: json.loads((tmp_path / d / "config.json").read_text())  # noqa: E731
    assert config("ref")["reward_min"] == config("killed")["reward_min"]


def test_reward_sweep_writes_the_accuracy_table_and_plot(rollouts, tmp_path, capsys):
    from hf_agents.cli import main as cli

    make_tiny_agent(context_length=32).save_pretrained(tmp_path / "agent")
    capsys.readouterr()
    assert cli(["reward", "sweep", str(rollouts / "rollouts"), "--agent", str(tmp_path / "agent"), "--out",
                str(tmp_path / "sweep"), "--targets", "left", "--sizes", "10", "0", "--seeds", "0", "1",
                "--steps", "5", "--padding-side", "left"]) == 0
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert summary["config"]["padding_side"] == "left"
    rows = summary["results"]["left"]
    assert set(rows) == {"agent", "random"} and set(rows["agent"]) == {"10", "all"}
    assert rows["agent"]["10"]["comparisons"] == 10 and rows["agent"]["all"]["comparisons"] > 10
    assert all(len(r["accuracy"]) == 2 and 0 <= r["mean"] <= 1 for enc in rows.values() for r in enc.values())
    assert 20 <= summary["held_out_trajectories"] <= 40  # half of the 60 rollouts, split by episode
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 0
    assert '"target": "left", "encoder": "agent"' in capsys.readouterr().out


def test_a_degenerate_reward_model_is_reported_and_refused_by_alignment(tmp_path):
    from hf_agents.training.reward import degenerate
    from hf_agents.training.rewards import RewardFunction

    assert "same reward" in degenerate({"reward_min": 2.0, "reward_max": 2.0})
    assert "chance" in degenerate({"reward_min": 0.0, "reward_max": 1.0, "eval_accuracy": 0.5,
                                   "eval_comparisons": 100})
    assert degenerate({"reward_min": 0.0, "reward_max": 1.0, "eval_accuracy": 0.8, "eval_comparisons": 100}) is None
    constant = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=32, reward_min=1.5,
                                                            reward_max=1.5))
    constant.save_pretrained(tmp_path / "rm")
    with pytest.raises(ValueError, match="same reward.*l2_penalty"):
        RewardFunction("model", str(tmp_path / "rm"), frame_size=32)
