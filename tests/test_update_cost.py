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
