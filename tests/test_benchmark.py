import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_runs_and_reports(tmp_path):
    """CI runs the benchmark once in quick mode so it never rots (no speed thresholds here)."""
    scratch = Path(tempfile.mkdtemp())  # short: multiprocessing's socket paths under it must fit AF_UNIX's 108 bytes
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--out",
                           str(tmp_path / "BENCH.md")], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(scratch.glob("hf-agents-benchmark-*")) and not list(scratch.glob("tmp*"))  # its data went
    report = json.loads(proc.stdout)
    for section in ("matmul_peak", "training", "encoder_ceiling", "trainer_vs_bare_loop", "acting", "context_and_frame_scaling",
                    "data_loading", "end_to_end_pretraining", "env", "rollout", "data_generation", "labelling"):
        assert section in report, section
    assert report["acting"]["batch=16"]["speedup"] > 0
    assert report["end_to_end_pretraining"]["ratio"] > 0, report["end_to_end_pretraining"]
    ceiling = report["encoder_ceiling"]["cpu"]  # the step does the encoder's work and more
    assert ceiling["ceiling_share_of_matmul_peak"] > ceiling["step_share_of_matmul_peak"] > 0, ceiling
    assert report["data_loading"]["64px/bmp/workers=0"]["per_core_frames_per_s"] > 0
    assert report["labelling"]["lost"] == 0 and report["labelling"]["acknowledged"] == 400
    assert "Matmul peak" in (tmp_path / "BENCH.md").read_text()


@pytest.mark.parametrize("choice", ["dense layers through oneDNN", "depthwise weight gradient as a convolution"])
def test_training_flops_count_the_same_work_whichever_way_it_goes(monkeypatch, choice):
    """The benchmark's share of the matmul peak divides counted FLOPs: the oneDNN products must count like torch's,
    and the depthwise weight gradient written as a convolution like torch's weight gradient."""
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark

    from hf_agents.models import modeling_agent
    from tests.conftest import make_tiny_agent

    model = make_tiny_agent().train()
    frames, actions = benchmark.batch(2, 4, model.config.image_size)
    monkeypatch.setattr(modeling_agent, "ONEDNN_MIN_MULTIPLY_ADDS", 0)  # every product through oneDNN where it runs
    counts = []
    for on in (False, True):
        if choice == "dense layers through oneDNN":
            monkeypatch.setattr(modeling_agent, "ONEDNN_LINEARS", on)
        else:  # the tiny agent's first two stages (8x8 and 4x4 maps) take it
            monkeypatch.setattr(modeling_agent, "DEPTHWISE_WEIGHT_GRAD_MIN_SIZE", 4 if on else 10**9)
        counts.append(benchmark.train_flops(model, frames, actions))
    assert counts[0] > 0 and counts[1] == counts[0]


@pytest.mark.parametrize("transposed", [False, True])
def test_convolution_gradients_count_as_torch_counts_them_without_groups(transposed):
    """`_convolution_backward_flops` agrees with torch's formula for ungrouped convolutions, whichever gradients are
    asked for, and counts a grouped one's weight gradient once, where torch counts it once per group."""
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark
    from torch.utils.flop_counter import conv_backward_flop

    x = (2, 6, 9, 7)  # 2 frames of 6 channels, 4 channels out through a 3x5 kernel
    w, out = ((6, 4, 3, 5), (2, 4, 11, 11)) if transposed else ((4, 6, 3, 5), (2, 4, 7, 3))
    for mask in ([True, False, False], [False, True, False], [True, True, True]):
        args = (out, x, w, None, [1, 1], [0, 0], [1, 1], transposed, [0, 0], 1, mask)
        ours = benchmark._convolution_backward_flops(*args, out_shape=(x, w, None))
        assert ours == conv_backward_flop(*args, out_val=(x, w, None)) > 0, mask
    grouped = (2, 4, 7, 3), (2, 4, 7, 3), (4, 1, 3, 5)  # a depthwise convolution of 4 channels
    weight_only = benchmark._convolution_backward_flops(*grouped, None, [1, 1], [1, 2], [1, 1], False, [0, 0], 4,
                                                        [False, True, False])
    assert weight_only == 2 * 2 * 4 * 7 * 3 * 15  # frames x channels x output pixels x taps, multiply and add


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_spares_a_training_step_its_page_faults(monkeypatch):
    """The cpu preset's step at batch 16 (64 px), as the recipes train it, in a fresh process as a training run
    starts: with glibc's own malloc it faulted 25,000-28,000 pages a step."""
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark

    from hf_agents import processes

    done = subprocess.run([sys.executable, "-c", benchmark._STEP_IN_A_FRESH_PROCESS, "4"], capture_output=True,
                          text=True, timeout=300, check=True, cwd=REPO,
                          env={**os.environ, "HF_AGENTS_KEEP_FREED_MEMORY": "1"})
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["kept"] and len(run["faults"]) == 2 and sum(run["faults"]) < 10_000, run
    monkeypatch.setenv("HF_AGENTS_KEEP_FREED_MEMORY", "yes")
    with pytest.raises(ValueError, match="HF_AGENTS_KEEP_FREED_MEMORY='yes': set it to 1 \\(malloc keeps"):
        processes.keep_freed_memory.__wrapped__()

