import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_agents.actions import STICK_CENTRES, continuous_to_ids
from hf_agents.cli import main as cli
from hf_agents.data import DatasetFormatError, TrajectoryWriter, load_trajectories
from hf_agents.data.wham import export_npz, import_wham

from .conftest import random_episode, write_test_dataset


def write_dataset(path, rng, lengths=(40, 7, 25), **kwargs):
    """This file's dataset: shards of 30 rows, every kind of episode metadata and a privileged state column."""
    return write_test_dataset(path, lengths, rng=rng, outcomes=["left", "none", "right"], variants=["ninja", "pirate"],
                              spawns=range(4), state=True, rows_per_shard=30, **kwargs)


def test_write_reopen_window(tmp_path, rng):
    eps = write_dataset(tmp_path / "ds", rng)
    ds = load_trajectories(tmp_path / "ds")
    assert len(ds) == 3 and ds.num_steps == 72 and ds.frame_size == (16, 16)
    assert len(list((tmp_path / "ds" / "data").glob("*.parquet"))) >= 2  # streamed into several shards
    steps = ds.read(0, 10, 5)
    np.testing.assert_array_equal(steps["frames"], eps[0][0][10:15])  # channels-last, as written
    np.testing.assert_array_equal(steps["actions"], eps[0][1][10:15])
    np.testing.assert_array_equal(steps["state_x"], np.arange(10, 15))
    windows = ds.windows(context=8, stride=4)
    # every window is a real slice of its episode; the short episode is padded and masked
    for i in range(len(windows)):
        e, s = windows.index[i]
        item = windows[i]
        n = int(item["attention_mask"].sum())
        np.testing.assert_array_equal(item["frames"][:n].numpy(), eps[e][0][s:s + n])
        np.testing.assert_array_equal(item["actions"][:n].numpy(), eps[e][1][s:s + n])
    short = [windows[i] for i in range(len(windows)) if windows.index[i][0] == 1]
    assert len(short) == 1 and short[0]["attention_mask"].tolist() == [1] * 7 + [0]
    assert "state_x" not in windows[0]  # privileged state does not reach model inputs
    from hf_agents.training.imitation import ImitationCollator

    loader = torch.utils.data.DataLoader(windows, batch_size=4, num_workers=2, collate_fn=ImitationCollator())
    batch = next(iter(loader))  # the collator turns the batch into the model's layout, contiguous
    assert batch["frames"].shape == (4, 8, 3, 16, 16) and batch["frames"].dtype == torch.uint8
    assert batch["frames"].is_contiguous()
    np.testing.assert_array_equal(batch["frames"][0].numpy(), windows[0]["frames"].numpy().transpose(0, 3, 1, 2))


def test_filters_cut_and_split(tmp_path, rng):
    write_dataset(tmp_path / "ds", rng, lengths=[30] * 20)
    ds = load_trajectories(tmp_path / "ds")
    ninja = ds.filter(variant="ninja", outcome="success", cut_at_outcome=True)
    assert all(m["variant"] == "ninja" and m["outcome"] != "none" for m in ninja.episodes)
    assert ninja.num_steps == len(ninja) * 16  # cut after the outcome step (15)
    train, ev = ds.split(0.2, seed=1)
    ids_train = {m["episode_id"] for m in train.episodes}
    ids_eval = {m["episode_id"] for m in ev.episodes}
    assert ids_train.isdisjoint(ids_eval) and len(ids_train | ids_eval) == 20 and ids_eval
    assert {m["episode_id"] for m in ds.split(0.2, seed=1)[1].episodes} == ids_eval  # deterministic


def test_dataset_card_and_info(tmp_path, rng):
    write_dataset(tmp_path / "ds", rng)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "data/*.parquet" in card
    assert "| ninja | 2 |" in card
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["num_episodes"] == 3 and info["outcomes"]["left"] == 1


def test_overwrite_protection_and_failed_write_keeps_old(tmp_path, rng):
    write_dataset(tmp_path / "ds", rng)
    before = sorted(p.name for p in (tmp_path / "ds" / "data").iterdir())
    with pytest.raises(FileExistsError, match="overwrite"):
        TrajectoryWriter(tmp_path / "ds")
    with pytest.raises(RuntimeError):
        with TrajectoryWriter(tmp_path / "ds", frame_size=(16, 16), overwrite=True) as w:
            w.add_episode(*random_episode(rng, 5))
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in (tmp_path / "ds" / "data").iterdir()) == before
    assert len(load_trajectories(tmp_path / "ds")) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging left behind


def test_bad_input_errors(tmp_path, rng):
    w = TrajectoryWriter(tmp_path / "x", frame_size=(16, 16))
    frames, ids = random_episode(rng, 4)
    with pytest.raises(DatasetFormatError, match="frames are 8x8 but the dataset takes 16x16; resize when importing"):
        w.add_episode(frames[:, :8, :8], ids)
    with pytest.raises(DatasetFormatError, match="channels-first"):
        w.add_episode(frames.transpose(0, 3, 1, 2), ids)
    bad = ids.copy()
    bad[0, 13] = 11
    with pytest.raises(ValueError, match="left_y"):
        w.add_episode(frames, bad)
    with pytest.raises(DatasetFormatError, match="unknown step column"):
        w.add_episode(frames, ids, health=np.zeros(4))
    with pytest.raises(DatasetFormatError, match="no episodes"):
        w.close()
    assert not (tmp_path / "x").exists()


def test_corrupt_shard_and_unknown_column(tmp_path, rng):
    write_dataset(tmp_path / "ds", rng)
    shard = sorted((tmp_path / "ds" / "data").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncate
    with pytest.raises(DatasetFormatError, match=f"{shard.name}.*corrupt or truncated"):
        load_trajectories(tmp_path / "ds")
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_dataset(tmp_path / "ds2", rng)
    shard = sorted((tmp_path / "ds2" / "data").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.append_column("health", pa.array(np.zeros(len(table), np.float32))), shard)
    with pytest.raises(DatasetFormatError, match=r"unknown column\(s\) \['health'\]"):
        load_trajectories(tmp_path / "ds2")
    with pytest.raises(FileNotFoundError):
        load_trajectories(tmp_path / "nope")


def make_wham_folder(path, rng, n=12, hw=(180, 300)):
    path.mkdir(parents=True)
    table = {}
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path / f"image{i}.png")
        sticks = rng.choice(STICK_CENTRES, 4).tolist()
        table[f"image{i}.png"] = rng.integers(0, 2, 12).astype(float).tolist() + sticks
    (path / "actions.json").write_text(json.dumps(table))
    return table


def test_wham_folder_import_round_trip(tmp_path, rng):
    table = make_wham_folder(tmp_path / "rec", rng)
    import_wham([tmp_path / "rec"], tmp_path / "ds", frame_size=(32, 32))
    ds = load_trajectories(tmp_path / "ds")
    assert ds.frame_size == (32, 32) and ds.num_steps == 12
    export_npz(ds, tmp_path / "out")
    data = np.load(next((tmp_path / "out").glob("*.npz")))
    assert data["images"].shape == (12, 3, 32, 32)
    recorded = np.asarray([table[f"image{i}.png"] for i in range(12)], dtype=np.float32)
    np.testing.assert_array_equal(data["actions"], recorded)  # stick values survive bit for bit
    # and the exported npz imports back to the same ids
    import_wham([tmp_path / "out"], tmp_path / "ds2", frame_size=(32, 32))
    np.testing.assert_array_equal(load_trajectories(tmp_path / "ds2").read(0)["actions"], continuous_to_ids(recorded))


def test_wham_npz_and_errors(tmp_path, rng):
    images = rng.integers(0, 256, (6, 3, 180, 300), dtype=np.uint8)
    actions = np.zeros((6, 16), np.float32)
    np.savez(tmp_path / "a.npz", images=images, actions=actions)
    import_wham([tmp_path / "a.npz"], tmp_path / "ds", frame_size=(64, 64))
    assert load_trajectories(tmp_path / "ds").read(0)["frames"].shape == (6, 64, 64, 3)
    actions[2, 14] = 3.0
    np.savez(tmp_path / "b.npz", images=images, actions=actions)
    with pytest.raises(ValueError, match="b.npz.*'right_x'"):
        import_wham([tmp_path / "b.npz"], tmp_path / "ds3")
    table = make_wham_folder(tmp_path / "rec", rng, n=3)
    del table["image1.png"]
    (tmp_path / "rec" / "actions.json").write_text(json.dumps(table))
    with pytest.raises(DatasetFormatError, match="actions.json: no entry for 'image1.png'"):
        import_wham([tmp_path / "rec"], tmp_path / "ds4")
    assert not (tmp_path / "ds3").exists() and not (tmp_path / "ds4").exists()


def test_cli_import_info_export(tmp_path, rng, capsys):
    make_wham_folder(tmp_path / "rec", rng, n=5)
    assert cli(["data", "import", str(tmp_path / "rec"), "--out", str(tmp_path / "ds"), "--size", "24"]) == 0
    assert cli(["data", "import", str(tmp_path / "rec"), "--out", str(tmp_path / "ds")]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert cli(["data", "info", str(tmp_path / "ds")]) == 0
    assert '"num_steps": 5' in capsys.readouterr().out
    assert cli(["data", "export", str(tmp_path / "ds"), "--out", str(tmp_path / "npz")]) == 0
    assert len(list((tmp_path / "npz").glob("*.npz"))) == 1


def test_any_state_key_and_writer_metadata_round_trip(tmp_path, rng):
    frames, ids = random_episode(rng, 5)
    policy = {"checkpoint": "outputs/sft", "temperature": 0.7, "greedy": False, "keep_steps": 16, "seed": 3}
    with TrajectoryWriter(tmp_path / "ds", frame_size=(16, 16), metadata={"policy": policy}) as w:
        w.add_episode(frames, ids, reward=np.ones(5), state_speed=np.arange(5), state_x=np.zeros(5))
    ds = load_trajectories(tmp_path / "ds")
    assert ds.info["policy"] == policy and ds.info["num_episodes"] == 1  # metadata never replaces the statistics
    assert ds.info["step_columns"][-3:] == ["reward", "state_speed", "state_x"]
    np.testing.assert_array_equal(ds.read(0)["state_speed"], np.arange(5))
    assert "state_speed" not in ds.windows(context=4)[0]  # privileged state stays out of model inputs


def test_frames_layout_helpers_round_trip(rng):
    from hf_agents.frames import (
        FrameLayoutError,
        resize_frames,
        to_channels_first,
        to_channels_last,
        to_model,
    )

    frames, _ = random_episode(rng, 3)
    chw = to_channels_first(frames)
    assert chw.shape == (3, 3, 16, 16) and chw.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(chw, to_model(frames).numpy())
    np.testing.assert_array_equal(to_channels_last(chw), frames)
    assert resize_frames(frames, (8, 12)).shape == (3, 8, 12, 3)
    with pytest.raises(FrameLayoutError, match="channels-first"):
        to_channels_first(chw)


def test_bmp_frames_convert_and_read_the_same(tmp_path, rng, capsys):
    eps = write_dataset(tmp_path / "png", rng, size=(12, 18))  # 18 px rows: BMP rows padded to 4 bytes
    assert cli(["data", "convert", str(tmp_path / "png"), "--out", str(tmp_path / "bmp"), "--frame-codec", "bmp"]) == 0
    png, bmp = load_trajectories(tmp_path / "png"), load_trajectories(tmp_path / "bmp")
    assert bmp.info["frame_codec"] == "bmp" and png.info["frame_codec"] == "png"
    assert bmp.episodes == png.episodes and bmp.info["num_steps"] == png.info["num_steps"]
    for i, (frames, ids) in enumerate(eps):
        a, b = png.read(i), bmp.read(i)
        assert a.keys() == b.keys()
        np.testing.assert_array_equal(b["frames"], frames)
        np.testing.assert_array_equal(b["actions"], ids)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    first = bmp.steps[0]["frame"]  # still a `datasets.Image` column: PIL opens it (the Hub viewer shows it)
    assert isinstance(first, Image.Image) and first.format == "BMP"
    np.testing.assert_array_equal(np.asarray(first), eps[0][0][0])
    cli(["data", "convert", str(tmp_path / "bmp"), "--out", str(tmp_path / "back"), "--frame-codec", "png"])
    np.testing.assert_array_equal(load_trajectories(tmp_path / "back").read(2)["frames"], png.read(2)["frames"])
    assert cli(["data", "convert", str(tmp_path / "bmp"), "--out", str(tmp_path / "bmp"), "--frame-codec", "png",
                "--overwrite"]) == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert load_trajectories(tmp_path / "bmp").info["frame_codec"] == "bmp"  # untouched


def test_damaged_bmp_frame_is_named(tmp_path, rng):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_dataset(tmp_path / "ds", rng, lengths=(10,), frame_codec="bmp")
    shard = next((tmp_path / "ds" / "data").glob("*.parquet"))
    table = pq.read_table(shard)
    frames = table.column("frame").to_pylist()
    frames[6] = {"bytes": frames[6]["bytes"][:-40], "path": None}  # truncated: the batched read falls back
    pq.write_table(table.set_column(table.schema.get_field_index("frame"), table.schema.field("frame"),
                                    pa.array(frames, table.schema.field("frame").type)), shard)
    ds = load_trajectories(tmp_path / "ds")
    np.testing.assert_array_equal(ds.read(0, 0, 6)["frames"].shape, (6, 16, 16, 3))
    with pytest.raises(DatasetFormatError, match="episode 0, step 6: the frame does not decode"):
        ds.read(0)
