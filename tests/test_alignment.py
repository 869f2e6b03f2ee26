"""Alignment: trainable parts and the reference policy, per-designer adapters, RLOO, DPO, preference FT and
online REINFORCE/RLOO on real (small) ViZDoom episodes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hf_agents.data.preferences import write_preferences
from hf_agents.frames import to_model
from hf_agents.models import AgentModel
from hf_agents.models.adapters import AdapterError, active_adapter, is_adapter, load_agent
from hf_agents.models.trainable import TrainablePolicy
from hf_agents.training.align import advantages
from tests.conftest import Drained, KillWhen, make_tiny_agent, random_batch, write_test_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("trainable", ["head", "lora", "full"])
def test_trainable_parts_and_reference_equal_policy_before_training(trainable):
    policy = TrainablePolicy.create(make_tiny_agent(), trainable, adapter_name="left", reference=True)
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    if trainable == "head":
        assert names and all(n.startswith("head.") for n in names)
    elif trainable == "lora":
        assert names and all("lora_" in n for n in names) and any("head" in n for n in names)
    else:
        assert "backbone.wte.weight" not in names and any(n.startswith("encoder") for n in names)
    frames, actions = random_batch(T=12)
    assert len(policy.parameters()) == len(names)
    logits, hidden = policy.logits(frames, actions)
    # KL is zero before the first update (LoRA: B = 0 at init, so disabling the adapter changes nothing)
    torch.testing.assert_close(policy.reference_logits(frames, actions, hidden), logits.detach(), atol=1e-5,
                               rtol=1e-4)
    with torch.no_grad():  # the reference stays where the policy started when the policy moves
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved, hidden = policy.logits(frames, actions)
    torch.testing.assert_close(policy.reference_logits(frames, actions, hidden), logits.detach(), atol=1e-5,
                               rtol=1e-4)
    assert not torch.allclose(moved, logits, atol=1e-3)


def test_a_run_going_on_from_an_adapter_is_held_to_that_adapter_not_the_base(tmp_path):
    """The reference is the policy at the start of the run: base + the adapter it goes on training (KL zero at the
    start), whatever the updates do to the trained copy."""
    make_tiny_agent().save_pretrained(tmp_path / "sft")
    first = TrainablePolicy.create(AgentModel.from_pretrained(tmp_path / "sft"), "lora", adapter_name="left",
                                   base_path=tmp_path / "sft")
    with torch.no_grad():  # stand-in for preference fine-tuning: an adapter away from zero
        for n, p in first.model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.2)
    first.save(tmp_path / "pft")
    frames, actions = random_batch(T=12)
    base_logits = AgentModel.from_pretrained(tmp_path / "sft").sliding_forward(frames, actions).logits
    policy = TrainablePolicy.create(AgentModel.from_pretrained(tmp_path / "sft"), "lora", adapter_name="left",
                                    init_adapter=tmp_path / "pft", base_path=tmp_path / "sft", reference=True)
    logits, _ = policy.logits(frames, actions)
    reference = policy.reference_logits(frames, actions)
    torch.testing.assert_close(reference, logits.detach(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(reference, base_logits, atol=1e-3)
    trained = policy.parameters()
    assert trained and all("lora_" in n and ".left" in n for n, p in policy.model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for p in trained:
            p.add_(0.5 * torch.randn_like(p))
    moved, _ = policy.logits(frames, actions)
    torch.testing.assert_close(policy.reference_logits(frames, actions), reference)
    assert not torch.allclose(moved, reference, atol=1e-3)
    assert [p.requires_grad for p in policy.parameters()] == [True] * len(trained)  # switching back kept them
    policy.save(tmp_path / "align")  # only the trained adapter is saved, flat
    assert not (tmp_path / "align" / "reference").exists() and (tmp_path / "align" / "adapter_model.safetensors").exists()


def test_adapters_per_designer_load_on_one_base_and_switch(tmp_path):
    base = make_tiny_agent()
    base.save_pretrained(tmp_path / "sft")
    frames, actions = random_batch(T=12)
    outputs = {}
    for seed, name in enumerate(["left", "right"]):
        policy = TrainablePolicy.create(AgentModel.from_pretrained(tmp_path / "sft"), "lora", adapter_name=name,
                                        base_path=tmp_path / "sft")
        torch.manual_seed(seed)
        with torch.no_grad():  # stand-in for training: move the adapter away from zero
            for n, p in policy.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.2)
        policy.save(tmp_path / f"align-{name}")
        assert json.loads((tmp_path / f"align-{name}" / "hf_agents_base.json").read_text())["adapter_name"] == name
        outputs[name] = policy.agent.sliding_forward(frames, actions).logits.detach()
        size = sum(f.stat().st_size for f in (tmp_path / f"align-{name}").iterdir())
        assert size < 2_000_000 and not (tmp_path / f"align-{name}" / "model.safetensors").exists()
    both = load_agent(tmp_path / "sft", {"left": tmp_path / "align-left", "right": tmp_path / "align-right"})
    agent = both.get_base_model()
    for name in ("left", "right"):
        with active_adapter(both, name):
            torch.testing.assert_close(agent.sliding_forward(frames, actions).logits, outputs[name], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(outputs["left"], outputs["right"])
    other = make_tiny_agent(seed=1)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterError, match="trained on .*sft"):
        load_agent(tmp_path / "other", {"left": tmp_path / "align-left"})


def test_a_policy_saved_over_the_other_kind_leaves_one_policy(tmp_path):
    """overwrite=true into a folder that held the other kind: the pipeline tells them apart by their files."""
    make_tiny_agent().save_pretrained(tmp_path / "sft")
    out = tmp_path / "pft"
    def save(trainable):
        agent = AgentModel.from_pretrained(tmp_path / "sft")
        TrainablePolicy.create(agent, trainable, adapter_name="left", base_path=tmp_path / "sft").save(out)

    save("head")
    assert not is_adapter(out) and (out / "model.safetensors").exists()
    save("lora")
    assert is_adapter(out) and not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    save("head")
    assert not is_adapter(out) and {p.name for p in out.iterdir()}.isdisjoint(
        {"adapter_config.json", "adapter_model.safetensors", "hf_agents_base.json"})


def test_online_dpo_pairs_the_best_and_worst_episode_of_each_group_and_skips_ties():
    from hf_agents.training.align import preference_pairs

    rewards = np.array([0.2, 0.9, 0.5, 0.4, 0.4, 0.4, 0.1, 0.7], np.float32)
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert preference_pairs(rewards, groups) == [(1, 0), (7, 6)]  # group 1 is all ties: no pair


def test_rloo_baseline_leaves_one_out_within_each_spawn_group():
    rewards = np.array([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.2, 0.8], np.float32)
    groups = np.repeat([0, 1], 4)
    adv = advantages(rewards, "rloo", groups)
    np.testing.assert_allclose(adv[0], 1.0 - 0.0)
    np.testing.assert_allclose(adv[1], 0.0 - 1 / 3)
    np.testing.assert_allclose(adv[4:].sum(), 0.0, atol=1e-6)
    np.testing.assert_allclose(advantages(rewards, "reinforce", groups), rewards)
    # a group left with one episode (the rest dropped) has no baseline: no signal rather than a wrong one
    assert advantages(np.array([0.7], np.float32), "rloo", np.array([3]))[0] == 0.0


def test_dpo_raises_the_chosen_trajectories_likelihood_against_the_reference(tmp_path):
    from hf_agents.training import launch

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    data = tmp_path / "rollouts"  # 8 random 10-step episodes: the even ones reach the left pad
    write_test_dataset(data, [10] * 8, size=32, rng=0, outcomes=["left", "none"], seeds=True)
    pairs = [(c, r) for c in (0, 2, 4, 6) for r in (1, 3, 5, 7)]
    write_preferences(tmp_path / "prefs.parquet", pairs, "designer-a")
    write_preferences(tmp_path / "prefs.parquet", pairs, "designer-a")
    common = [f"agent={tmp_path / 'sft'}", f"trajectories={data}", f"preferences={tmp_path / 'prefs.parquet'}",
              "per_device_train_batch_size=4", "learning_rate=3e-3", "report_to=none", "logging_steps=1",
              "save_strategy=no", "use_cpu=true"]
    code = launch.main([str(REPO / "recipes" / "dpo.yaml"), *common, "labeller=nobody",
                        f"output_dir={tmp_path / 'bad'}"])
    assert code == 2 and not (tmp_path / "bad").exists()  # an unknown labeller stops before any work
    code = launch.main([str(REPO / "recipes" / "dpo.yaml"), *common, "labeller=designer-a", "max_steps=12",
                        f"output_dir={tmp_path / 'dpo'}"])
    assert code == 0
    history = json.loads((tmp_path / "dpo" / "train_results.json").read_text())["log_history"]
    accuracy = [h["pair_accuracy"] for h in history if "pair_accuracy" in h]
    margin = [h["reward_margin"] for h in history if "reward_margin" in h]
    assert margin[0] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the start
    assert margin[-1] > 0.05 and accuracy[-1] > 0.9
    assert (tmp_path / "dpo" / "adapter_model.safetensors").exists()
    # the seed makes the run: the same seed twice, the same adapter (its LoRA initialisation included)
    for name in ("again-1", "again-2"):
        assert launch.main([str(REPO / "recipes" / "dpo.yaml"), *common, "labeller=designer-a", "max_steps=1",
                            "seed=7", f"output_dir={tmp_path / name}"]) == 0
    first, second = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("again-1", "again-2"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# -- online alignment on real ViZDoom episodes ----------------------------------------------------------------
def _align_config(tmp_path, **kw):
    from hf_agents.training.align import AlignConfig

    values = dict(agent=str(tmp_path / "sft"), output_dir=str(tmp_path / "align"), reward_source="oracle",
                  target="left", episodes_per_update=4, num_envs=2, max_episode_steps=12, trainable="head",
                  learning_rate=1e-2, report_to=["none"], save_steps=1)
    values.update(kw)
    return AlignConfig(**values)


def _env_fn(fault_injection=False):
    import functools

    from hf_agents.games.jumppads import make_jumppads

    return functools.partial(make_jumppads, frame_size=32, max_steps=12, fault_injection=fault_injection)


def _trajectory_logprobs(trainer, episodes):
    from hf_agents.models import get_action_and_logprob
    from hf_agents.training.rewards import stack_episodes

    frames, actions, mask = stack_episodes(episodes)
    with torch.no_grad():
        logits, _ = trainer.policy.logits(frames, actions)
        return (get_action_and_logprob(logits, actions).logprob * mask).sum(1).numpy()


@pytest.mark.parametrize("algorithm,trainable", [("reinforce", "head"), ("rloo", "lora"), ("online_dpo", "lora")])
def test_one_update_moves_the_policy_towards_higher_reward_trajectories(tmp_path, algorithm, trainable):
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.training.align import AlignTrainer

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    config = _align_config(tmp_path, algorithm=algorithm, rloo_k=2, trainable=trainable,
                           learning_rate=1e-2 if trainable == "head" else 3e-2)
    trainer = AlignTrainer(config, env_fn=_env_fn())
    with BatchedEnv(trainer.env_fn, 2) as venv:
        result, groups = trainer.rollout(venv, 0)
    episodes = result.episodes
    assert len(episodes) == 4 and sorted(e.index for e in episodes) == [0, 1, 2, 3]
    if algorithm != "reinforce":  # a group shares its reset seed, so its spawn
        assert episodes[0].spawn == episodes[1].spawn and episodes[2].spawn == episodes[3].spawn
        assert not np.array_equal(episodes[0].actions, episodes[1].actions)  # but each samples its own actions
    before = _trajectory_logprobs(trainer, episodes)
    np.testing.assert_allclose(before, [e.logprobs.sum() for e in episodes], atol=1e-3)  # rollout == re-scored
    trainer.reward_fn = lambda eps: np.asarray([1.0 if e.index in (0, 2) else 0.0 for e in eps], np.float32)
    log = trainer.learn(episodes, groups)
    assert log["episodes"] == 4 and log["logprob_drift"] < 1e-3
    if algorithm == "online_dpo":  # one pair per spawn group; policy == reference before the update
        assert log["dpo_pairs"] == 2 and log["dpo_margin"] == pytest.approx(0.0, abs=1e-4)
    gain = _trajectory_logprobs(trainer, episodes) - before
    assert gain[[0, 2]].min() > gain[[1, 3]].max(), gain


def test_kl_is_zero_with_fresh_adapters_and_grows_after_updates(tmp_path):
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.training.align import AlignTrainer

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    trainer = AlignTrainer(_align_config(tmp_path, trainable="lora", kl_coef=0.1, learning_rate=5e-2),
                           env_fn=_env_fn())
    with BatchedEnv(trainer.env_fn, 2) as venv:
        result, groups = trainer.rollout(venv, 0)
        np.testing.assert_allclose(trainer.kl(result.episodes), 0.0, atol=1e-4)
        trainer.reward_fn = lambda eps: np.asarray([float(e.index % 2) for e in eps], np.float32)
        trainer.learn(result.episodes, groups)
        result, _ = trainer.rollout(venv, 1)
        assert np.abs(trainer.kl(result.episodes)).max() > 1e-3


def test_dropped_episodes_shrink_the_batch(tmp_path):
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.training.align import AlignTrainer

    class Crashing(AlignTrainer):
        def reset_options(self, update):
            return [{"crash_at": 3} if k == 1 else {} for k in range(self.config.episodes_per_update)]

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    trainer = Crashing(_align_config(tmp_path), env_fn=_env_fn(fault_injection=True))
    trainer.reward_fn = lambda eps: np.asarray([float(e.index) for e in eps], np.float32)
    head = trainer.model.head[3].weight.detach().clone()
    with BatchedEnv(trainer.env_fn, 2) as venv:
        log = trainer.step(venv)
    assert log["dropped"] == 1 and log["episodes"] == 3
    assert not torch.equal(head, trainer.model.head[3].weight)  # the update used the 3 that finished


@pytest.mark.skipif(torch.cuda.is_available(), reason="rollout workers act on the CPU; with a GPU they are refused")
def test_rollout_workers_align_the_agent_as_one_process_does(tmp_path):
    """rollout_workers=2: two processes each act for one game and step it; the updates see the same episodes and
    learn the same weights (up to float order in the log-probs)."""
    from hf_agents.training.align import AlignTrainer

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    logs, heads = [], []
    for workers in (0, 2):
        config = _align_config(tmp_path, output_dir=str(tmp_path / f"align-{workers}"), num_updates=3,
                               rollout_workers=workers)
        trainer = AlignTrainer(config, env_fn=_env_fn())
        trainer.reward_fn = lambda eps: np.asarray([e.index % 3 + e.length / 10 for e in eps], np.float32)
        trainer.train()
        logs.append([(h["reward_mean"], h["success_left"], h["mean_length"]) for h in trainer.log_history])
        heads.append(trainer.model.head[3].weight.detach().clone())
    assert logs[0] == logs[1] and len(logs[0]) == 3
    assert not torch.equal(heads[0], make_tiny_agent().head[3].weight)
    torch.testing.assert_close(heads[0], heads[1], atol=1e-5, rtol=1e-4)


def _align_args(tmp_path, out, *extra):
    return [str(REPO / "recipes" / "align.yaml"), f"agent={tmp_path / 'sft'}", f"output_dir={out}",
            "reward_source=oracle", "reward_model=", "episodes_per_update=4", "num_envs=2", "max_episode_steps=12",
            "num_updates=5", "save_steps=1", "save_total_limit=10", "learning_rate=3e-2", "rloo_k=2", "report_to=none",
            "init_adapter=", *extra]


def _align_cli(tmp_path, out, *extra, ranks: int = 0):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if ranks:  # launched as `accelerate launch` does on CPU: torchrun processes speaking gloo
        env.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks)] if ranks else []
    args = [sys.executable, *launcher, "-m", "hf_agents.training", *_align_args(tmp_path, out, *extra)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _align_here(tmp_path, out, *extra):
    """The same run as `_align_cli`, in this process (no start-up: imports done, games' forkserver warm)."""
    from hf_agents.training import launch

    assert launch.main(_align_args(tmp_path, out, *extra)) == 0


@pytest.mark.slow
def test_killed_alignment_run_resumes_to_the_same_weights(tmp_path):
    make_tiny_agent().save_pretrained(tmp_path / "sft")
    killed = _align_cli(tmp_path, tmp_path / "killed")  # a process of its own, killed -9 once checkpoint-2 is there
    killer = KillWhen(killed, tmp_path / "killed" / "checkpoint-2", poll=0.2)
    _align_here(tmp_path, tmp_path / "full")  # meanwhile the uninterrupted run, here
    killer.check()
    assert not (tmp_path / "killed" / "adapter_model.safetensors").exists()  # it did not finish
    _align_here(tmp_path, tmp_path / "killed", "resume=true")
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    history = json.loads((tmp_path / "killed" / "train_results.json").read_text())["log_history"]
    assert [h["update"] for h in history] == [1, 2, 3, 4, 5]
    assert (tmp_path / "killed" / "success.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rloo", "online_dpo"])
def test_alignment_on_two_ranks_matches_one_rank(tmp_path, algorithm):
    """Each rank plays its share of the spawn groups with its own games; the gradients are summed: the same
    episodes, log and weights as one process, up to float order."""
    make_tiny_agent().save_pretrained(tmp_path / "sft")
    extra = ("num_updates=3", f"algorithm={algorithm}", "kl_coef=0.1")
    two = Drained(_align_cli(tmp_path, tmp_path / "ranks-2", *extra, ranks=2))
    if torch.cuda.is_available():  # one CPU process, as the ranks are
        one = _align_cli(tmp_path, tmp_path / "ranks-1", *extra, ranks=1)
        assert one.wait(timeout=500) == 0, one.stdout.read()[-3000:]
    else:  # one process: this one, while the ranks start
        _align_here(tmp_path, tmp_path / "ranks-1", *extra)
    code, output = two.wait(timeout=500)
    assert code == 0, output[-3000:]
    one, two = (load_file(tmp_path / f"ranks-{n}" / "adapter_model.safetensors") for n in (1, 2))
    assert one.keys() == two.keys() and len(one) > 0
    for k in one:
        # Adam divides by each gradient's own size: float-order noise in a near-zero gradient can move that one weight
        # by up to the learning rate, so the tensors are compared as a whole (and most elements one by one)
        gap = float(torch.linalg.norm(one[k] - two[k]) / torch.linalg.norm(one[k]))
        assert gap < 1e-3, (k, gap)
        assert float(torch.isclose(one[k], two[k], atol=5e-5, rtol=1e-3).float().mean()) > 0.99, k
    logs = [json.loads((tmp_path / f"ranks-{n}" / "train_results.json").read_text())["log_history"] for n in (1, 2)]
    for a, b in zip(*logs):
        assert a["episodes"] == b["episodes"] == 4
        assert {k: v for k, v in a.items() if k.startswith("success_")} == \
               {k: v for k, v in b.items() if k.startswith("success_")}
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    assert any(h["grad_norm"] > 0 for h in logs[0])  # they learnt something, the same thing


def test_bad_alignment_inputs_fail_before_any_work(tmp_path):
    from hf_agents.models import TrajectoryRewardConfig, TrajectoryRewardModel
    from hf_agents.training import launch

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    recipe = str(REPO / "recipes" / "align.yaml")
    base = [f"agent={tmp_path / 'sft'}", "report_to=none", "init_adapter="]
    # a target pad that does not exist
    assert launch.main([recipe, *base, "reward_source=oracle", "target=up", f"output_dir={tmp_path / 'a'}"]) == 2
    # a reward model of another frame size, and one that never finished training (no normalisation)
    other = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=64, reward_min=0.0, reward_max=1.0))
    other.save_pretrained(tmp_path / "rm64")
    unfinished = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=32))
    unfinished.save_pretrained(tmp_path / "rm-unfinished")
    for rm in ("rm64", "rm-unfinished"):
        assert launch.main([recipe, *base, f"reward_model={tmp_path / rm}", f"output_dir={tmp_path / 'b'}"]) == 2
    # an adapter to go on from that is not there (the designer's preference fine-tuning did not run)
    missing = [f"init_adapter={tmp_path / 'no-pft'}", "reward_source=oracle", f"output_dir={tmp_path / 'd'}"]
    assert launch.main([recipe, *base, *missing]) == 2
    assert not any((tmp_path / d).exists() for d in "abd")
    # an existing run is not overwritten by accident
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "adapter_model.safetensors").write_bytes(b"keep")
    assert launch.main([recipe, *base, "reward_source=oracle", f"output_dir={tmp_path / 'c'}"]) == 2
    assert (tmp_path / "c" / "adapter_model.safetensors").read_bytes() == b"keep"


@pytest.mark.slow
def test_preference_fine_tuning_clones_the_best_scored_rollouts_and_resumes(tmp_path):
    from hf_agents.data import load_trajectories
    from hf_agents.training import launch

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    out = tmp_path / "pft"
    args = [str(REPO / "recipes" / "preference_ft.yaml"), f"agent={tmp_path / 'sft'}",
            f"output_dir={out}", "reward_source=oracle", "target=left", "reward_model=", "rollout_episodes=6",
            "top_fraction=0.5", "trainable=head", "max_episode_steps=12", "num_envs=2", "max_steps=3",
            "per_device_train_batch_size=2", "context_length=8", "learning_rate=1e-2", "warmup_steps=0",
            "report_to=none", "use_cpu=true"]
    assert launch.main([*args, "iterations=1"]) == 0
    history = json.loads((out / "train_results.json").read_text())["metrics"]["history"]
    assert history[0]["rollouts"] == 6 and history[0]["kept"] == 3
    rollouts = load_trajectories(out / "iteration-1" / "rollouts")
    assert rollouts.info["policy"]["checkpoint"].endswith("sft")
    before = load_file(tmp_path / "sft" / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert not torch.equal(before["head.3.weight"], after["head.3.weight"])  # the head was trained
    torch.testing.assert_close(before["backbone.h.0.attn.c_attn.weight"], after["backbone.h.0.attn.c_attn.weight"])
    # resume=true goes on from the saved iteration instead of starting again
    assert launch.main([*args, "iterations=2", "resume=true"]) == 0
    history = json.loads((out / "train_results.json").read_text())["metrics"]["history"]
    assert [h["iteration"] for h in history] == [1, 2]
    assert load_trajectories(out / "iteration-2" / "rollouts").info["policy"]["checkpoint"].endswith("model")
    # killed after saving iteration 3's model, before recording it: resume does iteration 3 again
    shutil.copytree(out / "iteration-2" / "model", out / "iteration-3" / "model")
    assert launch.main([*args, "iterations=3", "resume=true"]) == 0
    history = json.loads((out / "train_results.json").read_text())["metrics"]["history"]
    assert [h["iteration"] for h in history] == [1, 2, 3]
    # a LoRA run cannot resume: said, not started again silently (its iterations save adapters, not agents)
    lora = [*args[:2], f"output_dir={tmp_path / 'lora'}", *args[3:], "trainable=lora"]
    assert launch.main([*lora, "iterations=1"]) == 0
    assert launch.main([*lora, "iterations=2", "resume=true"]) == 2
    assert not (tmp_path / "lora" / "iteration-2").exists()


@pytest.mark.slow
def test_preference_fine_tuning_on_two_ranks_rolls_out_once_and_trains_on_the_same_selection(tmp_path):
    make_tiny_agent().save_pretrained(tmp_path / "sft")
    out = tmp_path / "pft"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                           "hf_agents.training", str(REPO / "recipes" / "preference_ft.yaml"), f"agent={tmp_path / 'sft'}",
                           f"output_dir={out}", "reward_source=oracle", "target=left", "reward_model=",
                           "rollout_episodes=6", "top_fraction=0.5", "trainable=head", "max_episode_steps=12",
                           "num_envs=2", "max_steps=2", "per_device_train_batch_size=2", "context_length=8",
                           "learning_rate=1e-2", "warmup_steps=0", "report_to=none", "iterations=1"],
                          env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "train_results.json").read_text())["metrics"]["history"]
    assert history[0]["rollouts"] == 6 and history[0]["kept"] == 3  # one set of rollouts, not one per rank
    before = load_file(tmp_path / "sft" / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert not torch.equal(before["head.3.weight"], after["head.3.weight"])


def test_logprobs_recomputed_in_training_equal_the_rollout_datasets_column(tmp_path):
    """The `logprob` column written while acting is what training re-scores (same context, same temperature)."""
    from hf_agents.data import load_trajectories
    from hf_agents.models import get_action_and_logprob
    from hf_agents.rollout.evaluate import evaluate_model

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    evaluate_model(tmp_path / "sft", tmp_path / "eval", episodes=4, num_envs=2, temperature=0.8, videos=0,
                   progress=False, trajectories=tmp_path / "rollouts", max_steps=20)
    data = load_trajectories(tmp_path / "rollouts")
    policy = data.info["policy"]
    assert policy["temperature"] == 0.8 and policy["keep_steps"] == 4 and policy["checkpoint"].endswith("sft")
    model = AgentModel.from_pretrained(policy["checkpoint"]).eval()
    for i in range(len(data)):
        steps = data.read(i)
        frames, actions = to_model(steps["frames"][None]), torch.from_numpy(steps["actions"])[None]
        with torch.no_grad():
            logits = model.sliding_forward(frames, actions).logits
        rescored = get_action_and_logprob(logits, actions, temperature=policy["temperature"]).logprob[0]
        torch.testing.assert_close(rescored, torch.from_numpy(steps["logprob"]), atol=1e-3, rtol=1e-4)


def test_keep_best_saves_the_policy_of_the_best_window_and_keeps_it_across_a_resume(tmp_path):
    from hf_agents.training.align import AlignTrainer

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    rewards = [1.0, 0.9, 0.2, 0.1, 0.0]  # by update: the run gets worse after its second update

    def run(resume_from=None):
        config = _align_config(tmp_path, num_updates=5, keep_best=True, best_window=2, save_total_limit=10)
        trainer = AlignTrainer(config, env_fn=_env_fn())
        trainer.reward_fn = lambda eps: np.full(len(eps), rewards[trainer.update], np.float32)
        if resume_from:
            trainer.load_checkpoint(resume_from)
        return trainer.train()

    metrics = run()
    assert metrics["kept_update"] == 1 and metrics["kept_window_reward"] == pytest.approx(0.95)
    kept = load_file(tmp_path / "align" / "checkpoint-1" / "trainable.safetensors")
    saved = AgentModel.from_pretrained(tmp_path / "align").state_dict()
    last = load_file(tmp_path / "align" / "checkpoint-5" / "trainable.safetensors")
    for name, value in kept.items():
        torch.testing.assert_close(saved[name], value)
        assert not torch.equal(last[name], value)  # the last policy is another one
    assert run(resume_from=tmp_path / "align" / "checkpoint-3")["kept_update"] == 1  # the best came back with it
    for name, value in kept.items():
        torch.testing.assert_close(AgentModel.from_pretrained(tmp_path / "align").state_dict()[name], value)
