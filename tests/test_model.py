"""The hybrid model: DESIGN parameter counts, shapes, candidate weights, masked loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from starray.config import PRESETS, load_config
from starray.data.dataset import make_batch
from starray.model.hybrid import build_model, count_parameters
from starray.model.inference import predict_arrays, to_tensors
from starray.train.loop import Schedule, compute_loss, masked_smooth_l1


@pytest.mark.parametrize("preset, params", [("compact", 1_513_105), ("optimal", 4_725_521),
                                            ("large", 10_754_833)])
def test_preset_parameter_counts_match_design(preset, params):
    assert count_parameters(build_model(PRESETS[preset])) == params


def test_fold_stats_are_candidate_inputs_and_older_models_load_without_them():
    from starray.config import ConfigError, load_config

    batch = to_tensors(make_batch(8, 0, 0, 0)[0], "cpu")
    assert batch["cand_stats"].shape == (8, 8, 2)
    args = [batch[k] for k in ("lc", "pgram", "folded", "cand_logp")]
    dims = dict(PRESETS["tiny"], cand_context=True, period_head="candidate")
    torch.manual_seed(0)
    new = build_model({**dims, "fold_stats": 2}).eval()
    assert new.cand_branch.cnn[0].in_channels == 4
    with torch.no_grad():
        a = new(*args, batch["cand_stats"])["cand_logits"]
        for k in range(2):  # each statistic moves the scores
            other = batch["cand_stats"].clone()
            other[..., k] = 0.0
            assert not torch.allclose(a, new(*args, other)["cand_logits"])
    with pytest.raises(ValueError, match="cand_stats"):
        new(*args)
    old = build_model(dims).eval()  # model_dims of a checkpoint from before fold_stats
    assert old.cand_branch.cnn[0].in_channels == 2 and old.fold_stats == 0
    with torch.no_grad():
        torch.testing.assert_close(old(*args)["logits"], old(*args, batch["cand_stats"])["logits"])
    with pytest.raises(ConfigError, match="model.fold_stats: must be 0, 1"):
        load_config(None, ["model.fold_stats=3"])


def test_forward_shapes_and_loss_falls():
    torch.manual_seed(0)
    batch, _ = make_batch(32, 0, 0, 0)
    model = build_model(PRESETS["tiny"])
    cfg = load_config(None)
    x = to_tensors(batch, "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(x["lc"], x["pgram"], x["folded"], x["cand_logp"])
        loss, _ = compute_loss(out, x, cfg.train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert out["logits"].shape == (32, 14) and out["cand_weights"].shape == (32, 8)
    torch.testing.assert_close(out["cand_weights"].sum(1), torch.ones(32))
    assert losses[-1] < 0.7 * losses[0]
    pred = predict_arrays(model, batch)
    assert pred["probs"].shape == (32, 14) and np.all(np.isfinite(pred["p1_days"]))
    assert np.all(np.isin(pred["chosen_days"], batch["cand_days"]))


def test_period_loss_is_masked():
    pred = torch.tensor([0.5, 0.2, 0.9])
    target = torch.tensor([0.5, float("nan"), 0.9])
    loss, n = masked_smooth_l1(pred, target)
    assert float(loss) == 0.0 and int(n) == 2
    loss, n = masked_smooth_l1(pred, torch.full((3,), float("nan")))
    assert float(loss) == 0.0 and int(n) == 0


def test_cosine_schedule_warms_up_and_decays():
    cfg = load_config(None, ["train.epochs=4", "train.warmup_epochs=1"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    sched = Schedule(opt, cfg.train, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(sched.lr)
        sched.step()
    assert lrs[0] < lrs[9] == pytest.approx(cfg.train.lr)
    assert lrs[-1] < 0.2 * cfg.train.lr
    state = sched.state_dict()
    again = Schedule(opt, cfg.train, steps_per_epoch=10)
    again.load_state_dict(state)
    assert again.lr == pytest.approx(sched.lr)
