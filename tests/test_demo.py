"""The README's demo, end to end at its smoke scale (the cpu scale is the same code with larger sizes)."""

import pytest

from hf_agents.data import load_trajectories
from hf_agents.data.preferences import read_preferences


@pytest.mark.slow
def test_smoke_demo_runs_the_whole_chain_and_reuses_stages(tmp_path):
    from hf_agents.pipeline import run_demo

    lines = []
    summaries = run_demo(tmp_path / "out", scale="smoke", num_envs=2, log=lines.append)
    out = tmp_path / "out"
    assert {"base", "sft", "scratch"} <= set(summaries)
    assert all(s["episodes"] + s["dropped"] == 8 for s in summaries.values())
    report = (out / "report.md").read_text()
    for row in ("| base |", "| sft |", "| scratch |", "agent encoder"):
        assert row in report
    if (out / "reward-left-agent" / "model.safetensors").exists():  # alignment needs a reward model
        assert "| sft + left adapter |" in report
        assert (out / "align-left" / "adapter_model.safetensors").exists()
        assert (out / "align-left" / "success.png").exists()
    assert (out / "comparison.png").stat().st_size > 0
    # the SFT evaluation doubles as the on-policy rollouts: log-probs kept, preferences refer to them
    rollouts = load_trajectories(out / "rollouts" / "sft")
    assert len(rollouts) == summaries["sft"]["episodes"]
    assert "logprob" in rollouts.read(0)
    read_preferences(out / "preferences-left.parquet", [e["episode_id"] for e in rollouts.episodes])
    # a second run reuses every stage's output
    again = []
    run_demo(out, scale="smoke", num_envs=2, log=again.append)
    assert not any(line.endswith(" ...") for line in again), again
