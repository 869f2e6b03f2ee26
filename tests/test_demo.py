"""The README's demo, end to end at its smoke scale (the cpu scale is the same code with larger sizes), run from
the built wheel installed outside the source tree."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from hf_agents.data import load_trajectories
from hf_agents.data.preferences import read_preferences

REPO = Path(__file__).resolve().parents[1]


def installed_wheel(tmp_path) -> Path:
    """A venv whose hf_agents is the wheel (no dependencies installed: it reuses this environment's packages)."""
    source = tmp_path / "source"  # built from a copy: setuptools writes build/ and egg-info beside the sources
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "outputs*", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheels"), str(source)], check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    *map(str, (tmp_path / "wheels").glob("hf_agents-*.whl"))], check=True, capture_output=True)
    (site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, transformers, ...
    return venv / "bin" / "python"


@pytest.mark.slow
def test_smoke_demo_from_the_wheel_runs_the_whole_chain_and_reuses_stages(tmp_path):
    python = installed_wheel(tmp_path)
    where = subprocess.check_output([str(python), "-c", "import hf_agents; print(hf_agents.__file__)"], text=True,
                                    cwd=tmp_path)
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel, not the source tree
    out = tmp_path / "out"
    demo = [str(python), "-m", "hf_agents", "demo", "--scale", "smoke", "--num-envs", "2", "--out", str(out)]
    done = subprocess.run(demo, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in out.glob("*/eval/eval.json")}
    assert {"pretrain", "sft", "scratch"} <= set(summaries)
    assert all(s["episodes"] + s["dropped"] == 8 for s in summaries.values())
    report = (out / "report.md").read_text()
    for row in ("| base |", "| sft |", "| scratch |", "agent encoder", "| holds here |"):
        assert row in report
    if (out / "reward-left-agent" / "model.safetensors").exists():  # alignment needs a reward model
        assert "| sft + left preference fine-tuning |" in report and "| sft + left adapter |" in report
        assert (out / "preference-ft-left" / "adapter_model.safetensors").exists()  # RLOO went on from it
        config = json.loads((out / "align-left" / "train_results.json").read_text())["config"]
        assert config["init_adapter"] == str(out / "preference-ft-left")
        card = (out / "align-left" / "README.md").read_text()
        assert "(adapter) <- `preference-ft-left` <- `sft` <- `pretrain`" in card  # the lineage shows both stages
        assert (out / "align-left" / "adapter_model.safetensors").exists()
        assert (out / "align-left" / "success.png").exists()
    assert (out / "comparison.png").stat().st_size > 0
    assert "success_rate_left" in (out / "sft" / "README.md").read_text()  # each model's card shows its evaluation
    # the SFT evaluation doubles as the on-policy rollouts: log-probs kept, preferences refer to them
    rollouts = load_trajectories(out / "rollouts" / "sft")
    assert len(rollouts) == summaries["sft"]["episodes"]
    assert "logprob" in rollouts.read(0)
    read_preferences(out / "preferences-left.parquet", [e["episode_id"] for e in rollouts.episodes])
    # a second run reuses every stage's output
    again = subprocess.run(demo, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert not any(line.endswith(" ...") for line in again.stdout.splitlines()), again.stdout


def test_a_stage_is_reused_only_when_its_inputs_match(tmp_path):
    from hf_agents.games.jumppads.demo import Stages

    data, done, runs, lines = tmp_path / "data.bin", tmp_path / "stage-output", [], []
    data.write_bytes(b"one")

    def stage_fn():
        runs.append(1)
        done.write_text("made")

    for _ in range(2):
        Stages(tmp_path, lines.append)("s", done, stage_fn, inputs=[data], steps=3)
    assert len(runs) == 1 and lines[-1].endswith(f"reusing {done}")
    data.write_bytes(b"two")  # the input changed: redone, and said so
    Stages(tmp_path, lines.append)("s", done, stage_fn, inputs=[data], steps=3)
    Stages(tmp_path, lines.append)("s", done, stage_fn, inputs=[data], steps=4)  # so did a size of the scale
    assert len(runs) == 3 and any("made from other inputs" in line for line in lines)


def test_rollouts_that_all_tie_skip_the_reward_models(tmp_path):
    from hf_agents.games.jumppads.demo import Stages, reward_models
    from tests.conftest import write_test_dataset

    write_test_dataset(tmp_path / "rollouts", [6] * 4, size=16, outcomes=["none"])  # no pad reached: all tie
    lines = []
    results = reward_models(tmp_path, tmp_path / "rollouts", {"reward_epochs": 1}, Stages(tmp_path, lines.append),
                            lines.append)
    assert set(results) == {"agent", "random"} and all("skipped" in r for r in results.values())
    assert "skipped" in lines[-1] and not list(tmp_path.glob("reward-*"))


def _summary(left, middle, right, none, episodes=300):
    from hf_agents.rollout.evaluate import wilson

    shares = dict(left=left, middle=middle, right=right, none=none)
    return {"episodes": episodes, "distribution": shares,
            "ci95": {k: list(wilson(round(v * episodes), episodes)) for k, v in shares.items()}}


def test_the_report_says_which_of_the_papers_findings_hold():
    from hf_agents.games.jumppads.demo import findings, findings_table

    runs = {"base": _summary(0.10, 0.25, 0.02, 0.63), "sft": _summary(0.25, 0.30, 0.28, 0.17),
            "scratch": _summary(0.10, 0.10, 0.10, 0.70), "sft + left adapter": _summary(0.55, 0.20, 0.05, 0.20)}
    rewards = {"agent": {"eval_accuracy": 0.92, "eval_comparisons": 400},
               "random": {"eval_accuracy": 0.70, "eval_comparisons": 400}}
    holds = {r["finding"].split(" (")[0]: r["holds"] for r in findings(runs, rewards)}
    assert all(holds.values()), holds
    runs["sft"] = _summary(0.10, 0.45, 0.20, 0.25)  # a pad under 15% and failure over 20%: not competent
    runs["scratch"] = _summary(0.10, 0.30, 0.25, 0.35)  # 1.4x the SFT agent's failures
    rows = {r["finding"].split(" (")[0]: r for r in findings(runs, rewards)}
    assert not rows["the SFT agent is competent and balanced"]["holds"]
    assert not rows["without pretraining the agent fails >= 1.5x as often"]["holds"]
    assert rows["pretraining + SFT fails less than pretraining alone"]["holds"]
    table = findings_table(list(rows.values()))
    assert table.count("**no**") == 2 and "11% failure" in table
    nothing = {name: _summary(0.0, 0.0, 0.0, 1.0) for name in runs}  # every episode failed: zero counts
    assert not [r["finding"] for r in findings(nothing, rewards) if r["holds"] and "reward model" not in r["finding"]]
    assert "| n/a |" in findings_table(findings(nothing, rewards))


def test_the_smoke_report_says_what_smoke_scale_is_for():
    from hf_agents.games.jumppads.demo import report_header

    assert "only checks that the whole chain runs" in report_header("smoke")
    assert report_header("cpu").startswith("# JumpPads demo report (cpu scale") and "only checks" not in report_header("cpu")
