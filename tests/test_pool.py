"""The pool's resource rule, the files-mode dataset, and `starray generate` on a real Ray."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from starray.cli import main
from starray.config import ConfigError, from_dict, load_config
from starray.data import shards
from starray.data.dataset import make_batch
from starray.train.resources import NodeResources, ResourceError, check_fits, max_trials, run_needs

TWO = [NodeResources("a" * 32, 2.0, name="n1"), NodeResources("b" * 32, 2.0, name="n2")]


def test_default_run_fits_two_cores_exactly_and_misfits_give_the_numbers():
    cfg = load_config(None, [])
    needs = run_needs(cfg)
    assert needs.generator_cpus_per_node + needs.num_workers * needs.cpus_per_worker == 2.0
    plan = check_fits(cfg, [NodeResources("x", 2.0)])
    assert plan.node_ids() == ["x"] and plan.worker_slots == {"x": 2}
    with pytest.raises(ResourceError, match=r"0\.5 \+ 1\.75 = 2\.25 CPUs; node n1 .*: 2 CPUs"):
        check_fits(load_config(None, ["scaling.cpus_per_worker=1.75"]), TWO)
    with pytest.raises(ResourceError, match=r"3 worker\(s\) do not fit: node x: 2 CPUs, "
                                            r"generators take 0\.5, room for 2"):
        check_fits(load_config(None, ["scaling.num_workers=3"]), [NodeResources("x", 2.0)])
    strict = load_config(None, ["scaling.placement=STRICT_SPREAD"])
    with pytest.raises(ResourceError, match="one worker per node"):
        check_fits(strict, [NodeResources("x", 2.0)])
    assert check_fits(strict, TWO).node_ids() == ["a" * 32, "b" * 32]
    one = load_config(None, ["scaling.num_workers=1", "data.generators_per_node=2"])
    assert max_trials(one, TWO) == 2  # 2 x 0.5 generators leave one 0.75-CPU worker a node
    gpu = load_config(None, ["scaling.use_gpu=true", "scaling.num_workers=1"])
    with pytest.raises(ResourceError, match="and 1 GPUs"):
        check_fits(gpu, TWO)
    # the old key is read as the new one; both, different, is an error
    assert load_config(None, ["data.generators=3"]).data.generators_per_node == 3
    with pytest.raises(ConfigError, match="data.generators: old name of "
                                          "data.generators_per_node"):
        from_dict({"data": {"generators": 3, "generators_per_node": 1}})
    assert load_config(None, ["data.generators_per_node=1", "data.generators=3"]
                       ).data.generators_per_node == 3  # a later override wins
    with pytest.raises(ConfigError, match="data.path: required"):
        load_config(None, ["data.mode=files"])


def _small_dataset(root, sizes=(10, 7, 9), seed=0):
    cfg = load_config(None, [])
    data = {k: getattr(cfg.data, k) for k in shards.DATA_KEYS}
    plan = shards.plan(seed, data, sum(sizes), max(sizes))
    plan["shard_sizes"] = list(sizes)
    shards.start(root, plan)
    for k, n in enumerate(sizes):
        shards.write_shard(root, k, make_batch(n, seed, 0, k, space="fixed")[0])
    shards.finish(root, plan)
    return cfg


def test_dataset_reads_memory_mapped_rank_shards_and_bad_folders_name_the_path(tmp_path):
    root = tmp_path / "ds"
    cfg = _small_dataset(root)
    info = shards.open_dataset(root, cfg.data, verify=True)
    assert info.stars == 26 and isinstance(shards.load_shard(info, 0)["lc"], np.memmap)
    r0, r1 = shards.RankReader(info, 0, 2, 4), shards.RankReader(info, 1, 2, 4)
    assert r0.own == [0, 2] and r1.own == [1]
    assert r0.steps_per_epoch() == r1.steps_per_epoch() == 1  # 7 stars // 4: DDP-equal steps
    e0 = [b for b in shards.RankReader(info, 0, 1, 5).epoch(0)]
    e1 = [b for b in shards.RankReader(info, 0, 1, 5).epoch(1)]
    rows = lambda bs: [r.tobytes() for b in bs for r in b["lc"]]  # noqa: E731
    assert len(set(rows(e0))) == 25 and rows(e0) != rows(e1)  # every star once, reshuffled
    whole = {r.tobytes() for k in range(3) for r in shards.load_shard(info, k)["lc"]}
    assert set(rows(e0)) <= whole
    b = e0[0]
    i = next(j for j, r in enumerate(np.concatenate([shards.load_shard(info, k)["lc"]
                                                      for k in range(3)]))
             if r.tobytes() == b["lc"][0].tobytes())
    labels = np.concatenate([shards.load_shard(info, k)["label"] for k in range(3)])
    assert b["label"][0] == labels[i]  # rows stay aligned across keys
    with pytest.raises(shards.DatasetError, match="fewer than the 4 training workers"):
        shards.RankReader(info, 0, 4, 4)
    other = load_config(None, ["data.n_candidates=3"])
    with pytest.raises(shards.DatasetError, match=r"data.n_candidates: 3 here, 4 in the"):
        shards.open_dataset(root, other.data)
    with pytest.raises(shards.DatasetError, match=f"{tmp_path / 'none'} does not exist"):
        shards.open_dataset(tmp_path / "none")
    assert "cand_stats" in info.keys  # the folds' statistics: a model input
    man = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**man, "version": 1}))
    with pytest.raises(shards.DatasetError, match=r"v1 dataset; this starray reads v2 .*make "
                                                  r"it again with `starray generate"):
        shards.open_dataset(root)
    (root / "manifest.json").write_text(json.dumps(man))
    np.save(root / "shard-00001" / "lc.npy", np.zeros((3, 1, 1024), np.float32))
    with pytest.raises(shards.DatasetError, match=r"shard-00001/lc.npy has shape \(3, 1, 1024\)"):
        shards.open_dataset(root)
    (root / "manifest.json").unlink()
    with pytest.raises(shards.DatasetError, match="no manifest.json .*resume"):
        shards.open_dataset(root)
    with pytest.raises(shards.DatasetError, match="made with other settings"):
        shards.start(root, {**json.loads((root / "plan.json").read_text()), "seed": 5})


@pytest.mark.ray
def test_generate_in_parallel_is_identical_resumes_and_trains_in_files_mode(tmp_path, capsys):
    import ray

    from starray.train.driver import read_history, run_training

    args = ["generate", "--format", "shards", "--n", "264", "--shard-stars", "66"]
    assert main(args + ["--out", str(tmp_path / "w1"), "--workers", "1"]) == 0
    assert main(args + ["--out", str(tmp_path / "w2"), "--workers", "2"]) == 0
    m1 = (tmp_path / "w1" / "manifest.json").read_text()
    assert m1 == (tmp_path / "w2" / "manifest.json").read_text()  # sha256 of every array
    for k in range(4):
        for f in (tmp_path / "w1" / shards.shard_name(k)).glob("*.npy"):
            assert f.read_bytes() == (tmp_path / "w2" / shards.shard_name(k) / f.name).read_bytes()
    # resume: a lost shard (and the manifest) are made again, complete shards are kept
    keep = (tmp_path / "w2" / "shard-00000" / "lc.npy").stat().st_mtime_ns
    shutil.rmtree(tmp_path / "w2" / "shard-00002")
    (tmp_path / "w2" / "manifest.json").unlink()
    (tmp_path / "w2" / ".shard-00003.123.tmp").mkdir()  # a half-written leftover
    assert main(args + ["--out", str(tmp_path / "w2"), "--workers", "2"]) == 0
    assert (tmp_path / "w2" / "manifest.json").read_text() == m1
    assert (tmp_path / "w2" / "shard-00000" / "lc.npy").stat().st_mtime_ns == keep
    assert main(args[:3] + ["--n", "100", "--out", str(tmp_path / "w2")]) == 2
    assert "made with other settings" in capsys.readouterr().err

    cfg = load_config(None, ["data.mode=files", f"data.path={tmp_path / 'w1'}",
                             "data.val_stars=64", "data.batch_size=16", "train.epochs=2",
                             "train.warmup_epochs=0.5", f"output_dir={tmp_path}", "name=f"])
    summary = run_training(cfg)
    ray.shutdown()
    hist = read_history(tmp_path / "f")
    assert [h["epoch"] for h in hist] == [0, 1] and summary["best_val_acc"] is not None
    # 2 ranks x 2 shards of 66 stars each -> 132 // 16 = 8 steps per rank per epoch
    assert hist[0]["samples_per_s"] > 0
    from starray.train.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "f" / "checkpoints" / "last.pt")
    assert state["optimizer"]["state"][0]["step"] == pytest.approx(2 * 8)
    bad = load_config(None, ["data.mode=files", f"data.path={tmp_path / 'nope'}"])
    with pytest.raises(shards.DatasetError, match=f"{tmp_path / 'nope'} does not exist"):
        run_training(bad)
    assert not ray.is_initialized()  # checked before Ray starts
