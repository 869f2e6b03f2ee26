"""What makes an alignment update cheaper computes the same numbers: right padding is skipped, and the frame
embeddings recorded while acting stand for the frames where the frame encoder is frozen."""

import numpy as np
import pytest
import torch

from hf_agents.models.trainable import TrainablePolicy
from tests.conftest import make_tiny_agent, random_batch
from tests.test_alignment import _align_config


def test_sliding_forward_skips_padding_and_takes_recorded_embeddings_with_the_same_numbers():
    agent = make_tiny_agent(context_length=6, keep_steps=3)
    frames, actions = random_batch(B=3, T=17)
    lengths = torch.tensor([17, 5, 11])
    real = torch.arange(17)[None] < lengths[:, None]
    with torch.no_grad():
        full = agent.sliding_forward(frames, actions).logits
        skipped = agent.sliding_forward(frames, actions, lengths=lengths)
        embedded = agent.sliding_forward(None, actions, lengths=lengths, embeddings=agent.embed_frames(frames))
    torch.testing.assert_close(skipped.logits[real], full[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embedded.logits[real], full[real], atol=1e-5, rtol=1e-5)
    assert (skipped.last_hidden_state[~real] == 0).all()  # padding is not computed


def test_an_update_on_recorded_embeddings_has_the_gradients_of_one_on_frames(tmp_path):
    import functools

    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads import make_jumppads
    from hf_agents.training.align import AlignTrainer, advantages

    make_tiny_agent().save_pretrained(tmp_path / "sft")
    config = _align_config(tmp_path, trainable="lora", algorithm="rloo", rloo_k=2, kl_coef=0.1, max_episode_steps=80,
                           episodes_per_update=6)
    trainer = AlignTrainer(config, env_fn=functools.partial(make_jumppads, frame_size=32, max_steps=80))
    with BatchedEnv(trainer.env_fn, 2) as venv:
        result, groups = trainer.rollout(venv, 0)
    episodes = result.episodes
    assert all(e.features is not None and e.features.shape == (e.length, 64) for e in episodes)
    assert len({e.length for e in episodes}) > 1  # a ragged batch: padding to skip
    adv = advantages(np.arange(len(episodes), dtype=np.float32), "rloo", groups)

    def gradients():
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.loss(episodes, adv, len(episodes))
        return torch.cat([p.grad.flatten() for p in trainer.params])

    recorded, kl_recorded = gradients(), trainer.kl(episodes)
    for e in episodes:
        e.features = None  # the update encodes the frames again
    torch.testing.assert_close(gradients(), recorded, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(trainer.kl(episodes), kl_recorded, atol=1e-4)


def test_a_policy_that_trains_its_frame_encoder_refuses_recorded_embeddings():
    policy = TrainablePolicy.create(make_tiny_agent(), "full")
    frames, actions = random_batch()
    with pytest.raises(ValueError, match="trains the frame encoder"):
        policy.logits(frames, actions, embeddings=policy.agent.embed_frames(frames))


@pytest.mark.parametrize("layer,side", [("last", "right"), ("frames", "right"), ("last", "left")])
def test_an_agent_encoder_reward_model_scores_recorded_embeddings_as_it_scores_frames(tmp_path, layer, side):
    import functools

    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads import make_jumppads
    from hf_agents.models import TrajectoryRewardModel
    from hf_agents.training.align import AlignTrainer
    from hf_agents.training.rewards import pad_features, stack_episodes

    sft = make_tiny_agent()
    with torch.no_grad():  # non-zero biases, as after training: a black frame then embeds to a non-zero vector
        for p in sft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sft.save_pretrained(tmp_path / "sft")
    TrajectoryRewardModel.from_agent(sft, agent_layer=layer, padding_side=side, max_steps=40, reward_min=-1.0,
                                     reward_max=1.0).save_pretrained(tmp_path / "reward")
    config = _align_config(tmp_path, trainable="lora", algorithm="rloo", rloo_k=2, max_episode_steps=30,
                           episodes_per_update=4, reward_source="model", reward_model=str(tmp_path / "reward"))
    trainer = AlignTrainer(config, env_fn=functools.partial(make_jumppads, frame_size=32, max_steps=30))
    assert trainer.reward_fn.uses_acting_embeddings  # the reward model's encoder is the policy's frozen one
    with BatchedEnv(trainer.env_fn, 2) as venv:
        episodes = trainer.rollout(venv, 0)[0].episodes
    assert len({e.length for e in episodes}) > 1  # ragged: the padding's black frames are embedded too
    model = trainer.reward_fn.model
    frames, actions, mask = stack_episodes(episodes, max_steps=model.config.max_steps)
    known = torch.as_tensor(pad_features(episodes))
    torch.testing.assert_close(model.embed(frames, actions, mask.sum(1), frame_embeddings=known),
                               model.embed(frames, actions, mask.sum(1)), atol=1e-4, rtol=1e-4)
    recorded = trainer.reward_fn(episodes)
    for e in episodes:
        e.features = None  # the reward model encodes the frames itself
    np.testing.assert_allclose(trainer.reward_fn(episodes), recorded, atol=1e-5)

    other = make_tiny_agent(seed=1)  # another frame encoder: its embeddings cannot stand for the reward model's
    assert not trainer.reward_fn.use_acting_embeddings(other)
