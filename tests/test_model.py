import copy

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from hf_agents.actions import NOOP_IDS, ActionError
from hf_agents.models import (
    LORA_TARGET_MODULES,
    PRESETS,
    AgentConfig,
    AgentModel,
    AgentPolicy,
    get_action_and_logprob,
    split_logits,
)
from tests.conftest import make_tiny_agent, random_batch


def test_preset_parameter_counts_close_to_paper():
    counts = {}
    for name, target in [("paper-103m", 103e6), ("25m", 25e6), ("4m", 4e6)]:
        with torch.device("meta"):
            m = AgentModel(AgentConfig.from_preset(name))
        counts[name] = sum(p.numel() for p in m.parameters() if p.requires_grad)
        assert abs(counts[name] - target) / target < 0.1, (name, counts[name])
    assert set(PRESETS) >= {"paper-103m", "25m", "4m", "cpu", "tiny"}


def test_uniform_loss_at_init_and_outputs():
    m = make_tiny_agent()
    frames, actions = random_batch()
    out = m(frames, actions)
    uniform = 12 * np.log(2) + 4 * np.log(11)
    assert abs(out.loss.item() - uniform) < 0.5
    assert out.logits.shape == (2, 8, 68) and out.last_hidden_state.shape == (2, 8, 64)
    assert out.component_accuracy.shape == (16,)


def test_causality_and_loss_mask():
    m = make_tiny_agent()
    frames, actions = random_batch()
    out = m(frames, actions)
    frames2, actions2 = frames.clone(), actions.clone()
    frames2[:, 5:] = 0
    actions2[:, 4:] = 1  # a_4 feeds o_5 onward only
    out2 = m(frames2, actions2)
    torch.testing.assert_close(out.logits[:, :5], out2.logits[:, :5])
    assert not torch.allclose(out.logits[:, 5:], out2.logits[:, 5:])
    mask = torch.zeros(2, 8)
    mask[:, 0] = 1
    only_first = m(frames, actions, loss_mask=mask).loss
    full_first = m(frames[:, :1], actions[:, :1]).loss
    torch.testing.assert_close(only_first, full_first)


def test_save_load_auto_classes_safetensors(tmp_path):
    m = make_tiny_agent()
    m.save_pretrained(tmp_path / "agent")
    assert (tmp_path / "agent" / "model.safetensors").exists()
    assert not list((tmp_path / "agent").glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path / "agent").model_type == "hf_agent"
    loaded = AutoModel.from_pretrained(tmp_path / "agent").eval()
    assert isinstance(loaded, AgentModel)
    frames, actions = random_batch()
    torch.testing.assert_close(m(frames, actions).logits, loaded(frames, actions).logits)
    torch.testing.assert_close(loaded.token_offsets, m.token_offsets)  # non-persistent buffer restored


def test_an_agent_saved_before_the_activation_field_keeps_the_tanh_gelu_it_was_trained_with(tmp_path):
    import json

    legacy = make_tiny_agent(activation_function="gelu_pytorch_tanh").eval()
    legacy.save_pretrained(tmp_path / "agent")
    config = json.loads((tmp_path / "agent" / "config.json").read_text())
    del config["activation_function"]  # as written before the field existed
    (tmp_path / "agent" / "config.json").write_text(json.dumps(config))
    loaded = AutoModel.from_pretrained(tmp_path / "agent").eval()
    assert loaded.config.activation_function == "gelu_pytorch_tanh"
    frames, actions = random_batch()
    torch.testing.assert_close(loaded(frames, actions).logits, legacy(frames, actions).logits)
    exact = make_tiny_agent().eval()  # new agents: exact GELU, a different function of the same weights
    assert exact.config.activation_function == "gelu"
    # an agent-encoder reward model saved then rebuilds its frozen agent with the same GELU
    from hf_agents.models import TrajectoryRewardConfig, TrajectoryRewardModel

    reward = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="agent", agent_config=config))
    assert reward.agent.config.activation_function == "gelu_pytorch_tanh"
    exact.load_state_dict(legacy.state_dict())
    assert not torch.equal(exact(frames, actions).logits, legacy(frames, actions).logits)
    with pytest.raises(ValueError, match="activation_function"):
        AgentConfig(activation_function="relu")


def test_bad_inputs_are_clear():
    m = make_tiny_agent()
    frames, actions = random_batch()
    with pytest.raises(ValueError, match="channels-last"):
        m(frames.permute(0, 1, 3, 4, 2), actions)
    with pytest.raises(ValueError, match="resize"):
        m(frames[..., :16, :16], actions)
    with pytest.raises(ValueError, match="context length"):
        m(*random_batch(T=9))
    bad = actions.clone()
    bad[0, 0, 12] = 11
    with pytest.raises(ActionError, match="outside the gamepad contract"):
        m(frames, bad)
    with pytest.raises(ActionError, match="integer"):
        m(frames, actions.float())


def test_input_embeddings_hook_makes_a_frozen_agents_outputs_require_grad():
    """peft and Trainer reach the input embeddings through get_input_embeddings (e.g. gradient checkpointing with
    frozen weights hooks them so gradients reach the adapters): it is the action table the model embeds with."""
    m = make_tiny_agent().requires_grad_(False)
    assert m.get_input_embeddings() is m.action_embedding
    frames, actions = random_batch()
    assert not m(frames, actions).logits.requires_grad
    m.enable_input_require_grads()
    assert m(frames, actions).logits.requires_grad


def full_forward_logits(model, frames, actions):
    """Logits at the last observation from a full forward pass over the given history."""
    with torch.no_grad():
        a = torch.cat([actions, torch.as_tensor(NOOP_IDS)[None]], 0)
        return model(frames[None], a[None]).logits[0, -1]


@pytest.mark.parametrize("num_envs,keep", [(1, None), (3, None), (3, 3)])
def test_incremental_acting_equals_full_forward(num_envs, keep):
    H = 8
    m = make_tiny_agent(context_length=H, keep_steps=keep)
    policy = AgentPolicy(m, num_envs, seed=0)
    rng = np.random.default_rng(0)
    frames_hist = [[] for _ in range(num_envs)]
    act_hist = [[] for _ in range(num_envs)]
    rebuilt = False
    for t in range(40):
        # env 1 resets at steps 11 and 23 (different phases across envs)
        if num_envs > 1 and t in (11, 23):
            policy.reset([1])
            frames_hist[1], act_hist[1] = [], []
        obs = rng.integers(0, 256, (num_envs, 32, 32, 3), dtype=np.uint8)
        actions, logprobs = policy.act(obs)
        assert actions.shape == (num_envs, 16) and np.all(logprobs <= 0)
        for i in range(num_envs):
            frames_hist[i].append(torch.from_numpy(obs[i]).permute(2, 0, 1))
            n = policy.context_lengths()[i]
            assert 1 <= n <= H
            assert len(frames_hist[i]) - n == m.context_start(len(frames_hist[i]) - 1)  # the one schedule
            rebuilt |= n < len(frames_hist[i])
            expected = full_forward_logits(m, torch.stack(frames_hist[i][-n:]),
                                           torch.as_tensor(np.asarray(act_hist[i][len(act_hist[i]) - (n - 1):] if n > 1 else np.zeros((0, 16), np.int64))))
            torch.testing.assert_close(policy.last_logits[i], expected, atol=2e-4, rtol=1e-4)
            act_hist[i].append(actions[i])
    assert rebuilt  # the window slid past H at least once


def test_acting_writes_into_a_fixed_cache_in_place():
    """Each step writes its 2 tokens into the slots of their window positions: through slides past H steps and a
    reset, the cache keeps its 2H + 1 slots and its storage (it neither grows nor gets compacted)."""
    H = 8
    policy = AgentPolicy(make_tiny_agent(context_length=H), 2, seed=0)
    obs = np.zeros((2, 32, 32, 3), np.uint8)
    keys = policy.cache.keys[0]
    storage = keys.data_ptr()
    for t in range(3 * H):
        if t == 5:
            policy.reset([1])
        policy.act(obs)
    assert max(policy.context_lengths()) <= H  # both slid (24 and 19 steps played)
    assert policy.cache.keys[0].shape == keys.shape and keys.shape[-2] == 2 * H + 1
    assert policy.cache.keys[0].data_ptr() == storage


def test_greedy_matches_argmax_and_temperature():
    m = make_tiny_agent()
    policy = AgentPolicy(m, 2, greedy=True)
    obs = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    actions, _ = policy.act(obs)
    expected = torch.stack([lg.argmax(-1) for lg in split_logits(policy.last_logits)], -1)
    np.testing.assert_array_equal(actions, expected.numpy())
    cold = AgentPolicy(m, 2, temperature=1e-6, seed=3)
    np.testing.assert_array_equal(cold.act(obs)[0], actions)


def logits_and_gradients(m, frames, actions):
    """One forward and backward of the agent from zero gradients: its logits and every parameter's gradient."""
    m.zero_grad(set_to_none=True)
    out = m(frames, actions)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_same_gradients():
    frames, actions = random_batch()
    grads = []
    for ckpt in (False, True):
        m = make_tiny_agent(dropout=0.0).train()
        if ckpt:
            enable = getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable
            enable()
            assert m.backbone.gradient_checkpointing
        grads.append(logits_and_gradients(m, frames, actions)[1])
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts the oneDNN products the dense layers make, every product going there whatever its size (skips where
    torch has no oneDNN linear)."""
    from hf_agents.models import modeling_agent

    if modeling_agent._ONEDNN_LINEAR is None:
        pytest.skip("no oneDNN linear in this torch build or on this CPU")
    calls = []
    op = modeling_agent._ONEDNN_LINEAR
    monkeypatch.setattr(modeling_agent, "_ONEDNN_LINEAR", lambda *args: calls.append(1) or op(*args))
    monkeypatch.setattr(modeling_agent, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
    return calls


def test_only_large_products_go_through_onednn(onednn_calls, monkeypatch):
    from hf_agents.models import modeling_agent
    from hf_agents.models.modeling_agent import dense

    monkeypatch.setattr(modeling_agent, "ONEDNN_MIN_MULTIPLY_ADDS", 1 << 21)  # the default
    with torch.no_grad():
        dense(torch.randn(2, 192), torch.randn(576, 192), None)  # acting at batch 1: 221k multiply-adds
        assert not onednn_calls
        dense(torch.randn(32, 192), torch.randn(768, 192), None)  # acting at batch 16: 4.7M
        assert len(onednn_calls) == 1


def test_dense_layers_through_onednn_give_torchs_outputs_and_gradients(monkeypatch, onednn_calls):
    from transformers.pytorch_utils import Conv1D

    from hf_agents.models import modeling_agent

    m = make_tiny_agent(dropout=0.0).train()
    layers = [x for x in m.modules() if isinstance(x, (torch.nn.Linear, Conv1D))]
    assert layers and all(type(x) in (modeling_agent.DenseLinear, modeling_agent.DenseConv1D) for x in layers)
    frames, actions = random_batch()
    runs = []
    for onednn in (False, True):
        monkeypatch.setattr(modeling_agent, "ONEDNN_LINEARS", onednn)
        onednn_calls.clear()
        runs.append(logits_and_gradients(m, frames, actions))
        assert bool(onednn_calls) == onednn
    torch.testing.assert_close(runs[1][0], runs[0][0], atol=1e-5, rtol=1e-4)
    assert runs[0][1].keys() == runs[1][1].keys() and len(runs[0][1]) > 20
    for n in runs[0][1]:
        torch.testing.assert_close(runs[1][1][n], runs[0][1][n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("case", ["bias", "no bias", "one vector", "frozen weight", "transposed weight", "wide input"])
def test_dense_matches_torchs_linear_and_its_gradients(onednn_calls, case):
    from hf_agents.models.modeling_agent import ONEDNN_WEIGHT_GRAD_MIN_FEATURES, dense

    g = torch.Generator().manual_seed(0)
    k = ONEDNN_WEIGHT_GRAD_MIN_FEATURES if case == "wide input" else 5  # the weight gradient through oneDNN or torch
    x = torch.randn(k if case == "one vector" else (2, 3, k), generator=g, requires_grad=True)
    weight = torch.randn(k, 4, generator=g).t() if case == "transposed weight" else torch.randn(4, k, generator=g)
    weight.requires_grad_(case != "frozen weight")
    bias = None if case == "no bias" else torch.randn(4, generator=g, requires_grad=True)
    grads = []
    for fn in (torch.nn.functional.linear, dense):
        out = fn(x, weight, bias)
        wanted = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
        grads.append((out.detach(), torch.autograd.grad((out * torch.arange(4.0)).sum(), wanted)))
    # forward and input gradient, and the weight gradient where the input is wide
    assert len(onednn_calls) == 2 + (case == "wide input")
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for ours, torchs in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(ours, torchs)


@pytest.mark.parametrize("case", ["channels-last", "contiguous", "no bias", "frozen input", "frozen weight", "2x2 map",
                                  "3x5 kernel"])
def test_depthwise_convolutions_train_with_torchs_gradients(case):
    from hf_agents.models.modeling_agent import DepthwiseConv2d, InferenceConv2d

    m = make_tiny_agent()
    swapped = [x for x in m.modules() if type(x) is DepthwiseConv2d]
    assert swapped and all(x.groups == x.in_channels > 1 for x in swapped)
    others = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and type(x) is not DepthwiseConv2d]
    assert others and all(type(x) is InferenceConv2d and x.groups == 1 for x in others)  # the stem, the downsamplings
    g = torch.Generator().manual_seed(0)
    kernel = (3, 5) if case == "3x5 kernel" else (7, 7)
    padding = (kernel[0] // 2, kernel[1] // 2)
    conv = DepthwiseConv2d(6, 6, kernel, padding=padding, groups=6, bias=case != "no bias")
    shape = (3, 6, 2, 2) if case == "2x2 map" else (3, 6, 9, 5)  # torch's weight gradient, or ours from 4x4
    x = torch.randn(shape, generator=g)
    x = x.contiguous(memory_format=torch.channels_last) if case != "contiguous" else x
    x.requires_grad_(case != "frozen input")
    conv.weight.requires_grad_(case != "frozen weight")
    wanted = [t for t in (x, conv.weight, conv.bias) if t is not None and t.requires_grad]
    upstream, runs = torch.randn(shape, generator=g), []
    for forward in (lambda a: torch.nn.functional.conv2d(a, conv.weight, conv.bias, 1, padding, 1, 6), conv):
        out = forward(x)
        runs.append((out.detach(), torch.autograd.grad((out * upstream).sum(), wanted)))
    torch.testing.assert_close(runs[1][0], runs[0][0])
    assert len(runs[1][1]) == len(wanted) >= 1
    for ours, torchs in zip(runs[1][1], runs[0][1]):
        torch.testing.assert_close(ours, torchs)


@pytest.mark.parametrize("layout", ["channels-last", "contiguous"])
def test_convolutions_infer_with_a_weight_reordered_once_per_shape_that_follows_updates(layout, monkeypatch):
    from hf_agents.models import modeling_agent
    from hf_agents.models.modeling_agent import use_dense_layers

    if modeling_agent._ONEDNN_CONV is None:
        pytest.skip("no oneDNN convolution on this CPU")
    reorder, convolve = modeling_agent._ONEDNN_CONV
    shapes = []
    monkeypatch.setattr(modeling_agent, "_ONEDNN_CONV", (lambda *a: shapes.append(a[-1]) or reorder(*a), convolve))
    g = torch.Generator().manual_seed(0)
    for conv in (torch.nn.Conv2d(3, 5, 8, stride=4, padding=3), torch.nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False),
                 torch.nn.Conv2d(6, 6, 7, padding=3, groups=6)):  # a stem, a downsampling, a depthwise convolution
        use_dense_layers(conv)
        x = torch.randn(4, conv.in_channels, 16, 12, generator=g)
        x = x.contiguous(memory_format=torch.channels_last) if layout == "channels-last" else x
        with torch.no_grad():
            for _ in range(2):
                shapes.clear()
                outs = [conv(x), conv(x), conv(x[:1])]
                assert shapes == [[4, conv.in_channels, 16, 12], [1, conv.in_channels, 16, 12]]  # once per shape
                wanted = torch.nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, 1, conv.groups)
                for out, want in zip(outs, (wanted, wanted, wanted[:1])):
                    torch.testing.assert_close(out, want)
                conv.weight.mul_(-0.5)  # an in-place update, as an optimizer's: the next calls convolve with it
            copied = copy.deepcopy(conv)  # as the reference policy is made: the reordered weights stay behind
            torch.testing.assert_close(copied(x), conv(x))


def test_the_encoder_in_parts_on_a_cpu_gives_the_whole_batchs_outputs_and_gradients(monkeypatch):
    from hf_agents.models import modeling_agent

    m = make_tiny_agent().train()
    frames, actions = random_batch()  # (B, T, 3, 32, 32)
    parts = []
    encode = modeling_agent.FrameEncoder._encode
    monkeypatch.setattr(modeling_agent.FrameEncoder, "_encode", lambda self, x: parts.append(len(x)) or encode(self, x))
    runs = []
    for pixels in (1 << 40, 3 * 32 * 32):  # whole, then parts of 3 frames
        monkeypatch.setattr(modeling_agent, "CPU_CHUNK_PIXELS", pixels)
        parts.clear()
        runs.append((*logits_and_gradients(m, frames, actions), list(parts)))
    n = frames.shape[0] * frames.shape[1]
    assert runs[0][2] == [n] and runs[1][2] == [3] * (n // 3) + ([n % 3] if n % 3 else [])
    torch.testing.assert_close(runs[1][0], runs[0][0])
    assert runs[0][1].keys() == runs[1][1].keys() and any(k.startswith("encoder.") for k in runs[0][1])
    for name in runs[0][1]:
        torch.testing.assert_close(runs[1][1][name], runs[0][1][name], msg=name)


def test_bf16_autocast_runs():
    m = make_tiny_agent()
    frames, actions = random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(frames, actions).loss
    assert torch.isfinite(loss) and abs(loss.item() - m(frames, actions).loss.item()) < 0.5


def test_lora_attach_save_reload_merge(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = make_tiny_agent()
    frames, actions = random_batch()
    ref = base(frames, actions).logits.detach()
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=LORA_TARGET_MODULES, fan_in_fan_out=True,
                                                 init_lora_weights=False))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    tuned = peft_model(frames=frames, actions=actions).logits.detach()
    assert not torch.allclose(tuned, ref)
    with peft_model.disable_adapter():  # the reference policy is exactly the base
        torch.testing.assert_close(peft_model(frames=frames, actions=actions).logits, ref)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(make_tiny_agent(), tmp_path / "adapter")
    torch.testing.assert_close(reloaded(frames=frames, actions=actions).logits, tuned)
    merged = reloaded.merge_and_unload()
    torch.testing.assert_close(merged(frames, actions).logits, tuned, atol=1e-5, rtol=1e-4)


def test_acting_with_the_adapter_merged_into_a_copy_is_the_same_policy():
    from peft import LoraConfig, get_peft_model

    from hf_agents.models.adapters import merged_for_acting

    frames = np.random.default_rng(0).integers(0, 256, (24, 3, 32, 32, 3), dtype=np.uint8)  # (steps, envs, ...)

    def act(model):
        policy = AgentPolicy(model, 3, seed=7)
        steps = [policy.act(f) for f in frames]
        return np.stack([a for a, _ in steps]), np.stack([lp for _, lp in steps])

    peft_model = get_peft_model(make_tiny_agent(), LoraConfig(r=4, target_modules=LORA_TARGET_MODULES,
                                                              fan_in_fan_out=True, init_lora_weights=False))
    merged = merged_for_acting(peft_model)
    assert isinstance(merged, AgentModel) and not any("lora_" in n for n, _ in merged.named_parameters())
    with_lora, without = act(peft_model.get_base_model()), act(merged)
    np.testing.assert_array_equal(with_lora[0], without[0])
    np.testing.assert_allclose(with_lora[1], without[1], atol=1e-4)
    assert any("lora_" in n for n, _ in peft_model.named_parameters())  # the trained model keeps its adapter
    with peft_model.disable_adapter():
        assert not np.array_equal(act(peft_model.get_base_model())[1], without[1])  # the adapter is in the copy
    plain = make_tiny_agent()
    assert merged_for_acting(plain) is plain


def test_tiny_model_overfits_tiny_dataset():
    m = make_tiny_agent().train()
    frames, actions = random_batch(B=4)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = m(frames, actions).loss
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    out = m(frames, actions)
    assert out.loss.item() < 0.1 * first
    assert out.component_accuracy.min() > 0.95


def test_a_reloaded_frozen_agent_embeds_each_step_from_that_steps_past_only(tmp_path):
    """What the reward model reuses: per-step embeddings of a saved agent, frozen, equal to the live model's, and
    the embedding of step t depends on frames 0..t and actions 0..t-1 of its own trajectory and nothing else."""
    m = make_tiny_agent()
    m.save_pretrained(tmp_path / "agent")
    frozen = AgentModel.from_pretrained(tmp_path / "agent").eval().requires_grad_(False)
    frames, actions = random_batch()
    emb = frozen(frames, actions).last_hidden_state
    assert emb.shape == (2, 8, 64) and not emb.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(emb, m(frames, actions).last_hidden_state)  # the saved weights, not a fresh init

    def changed(frames=frames, actions=actions):  # which (trajectory, step) embeddings moved
        return (frozen(frames, actions).last_hidden_state - emb).abs().amax(-1) > 1e-5

    new_frame = frames.clone()
    new_frame[0, 5] = 255 - new_frame[0, 5]
    assert changed(frames=new_frame).tolist() == [[t >= 5 for t in range(8)], [False] * 8]  # o_5: steps 5..
    new_action = actions.clone()
    new_action[0, 5, 0] = 1 - new_action[0, 5, 0]
    assert changed(actions=new_action).tolist() == [[t >= 6 for t in range(8)], [False] * 8]  # a_5: steps 6..


@pytest.mark.parametrize("keep", [None, 3])
def test_sliding_forward_rescores_what_acting_sampled(keep):
    """Log-probs recomputed over whole trajectories equal those recorded while acting (with resets and
    envs out of phase), at the sampling temperature."""
    H, T, temperature = 8, 27, 0.7
    m = make_tiny_agent(context_length=H, keep_steps=keep)
    policy = AgentPolicy(m, 2, temperature=temperature, seed=0)
    rng = np.random.default_rng(0)
    frames, actions, logprobs = [[], []], [[], []], [[], []]
    policy.act(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))  # env 1 runs one step ahead
    policy.reset([0])
    for _ in range(T):
        obs = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        a, lp = policy.act(obs)
        for i in range(2):
            frames[i].append(obs[i])
            actions[i].append(a[i])
            logprobs[i].append(lp[i])
    f0 = torch.from_numpy(np.stack(frames[0])).permute(0, 3, 1, 2)[None]
    a0 = torch.from_numpy(np.stack(actions[0]))[None]
    with torch.no_grad():
        rescored = get_action_and_logprob(m.sliding_forward(f0, a0).logits, a0, temperature=temperature)
    torch.testing.assert_close(rescored.logprob[0], torch.tensor(np.asarray(logprobs[0])), atol=2e-4, rtol=1e-4)
    assert rescored.entropy.shape == (1, T) and bool((rescored.entropy > 0).all())


def test_action_logprob_samples_and_rescores_consistently():
    torch.manual_seed(0)
    logits = torch.randn(5, 68)
    g = torch.Generator().manual_seed(1)
    sample = get_action_and_logprob(logits, temperature=0.5, generator=g)
    again = get_action_and_logprob(logits, sample.actions, temperature=0.5)
    torch.testing.assert_close(again.logprob, sample.logprob)
    manual = sum(torch.log_softmax(lg / 0.5, -1).gather(-1, sample.actions[:, c:c + 1])[:, 0]
                 for c, lg in enumerate(split_logits(logits)))
    torch.testing.assert_close(sample.logprob, manual)
    assert sample.actions[:, :12].max() <= 1 and sample.actions[:, 12:].max() <= 10
    # imitation's cross-entropy is minus the same log-prob
    loss, _ = AgentModel.imitation_loss(logits[None], sample.actions[None], torch.ones(1, 5))
    torch.testing.assert_close(loss, -get_action_and_logprob(logits, sample.actions).logprob.mean())


def test_context_start_schedule():
    m = make_tiny_agent(keep_steps=3)
    assert [m.context_start(t) for t in range(15)] == [0] * 8 + [5] * 5 + [10] * 2
    with pytest.raises(ValueError, match="keep_steps"):
        AgentConfig.from_preset("tiny", context_length=8, keep_steps=8)
