"""Config: defaults load, overrides apply, bad values name the field."""

from __future__ import annotations

import pytest

from starray.cli import main
from starray.config import ConfigError, load_config, resolved_model, save_config, validate


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["train.lr=1e-3", "model.preset=compact", "name=x"])
    assert cfg.train.lr == 1e-3 and cfg.name == "x"
    assert resolved_model(cfg.model)["d_model"] == 128
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, match", [
    ("model.preset=huge", r"model.preset: 'huge' is not one of tiny, compact"),
    ("train.lr=-1", r"train.lr: must be > 0"),
    ("train.lrr=1", r"train.lrr: unknown key; allowed: .*lr"),
    ("data.mode=random", r"data.mode: 'random' is not one of stream, fixed"),
    ("model.n_heads=5", r"model.n_heads: 5 does not divide model.d_model=64"),
    ("scaling.placement=ANY", r"scaling.placement"),
    ("train.epochs=two", r"train.epochs: expected an integer"),
    ("bogus.key=1", r"unknown section 'bogus'"),
])
def test_bad_values_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_more_workers_than_cpus():
    cfg = load_config(None, ["scaling.num_workers=64"])
    with pytest.raises(ConfigError, match=r"scaling.num_workers: 64 workers .* only 2"):
        validate(cfg, available_cpus=2)


def test_cli_bad_config_fails_before_ray(capsys):
    import ray

    code = main(["train", "--set", "model.preset=huge", "--output-dir", "/tmp/never"])
    assert code == 2
    assert "model.preset" in capsys.readouterr().err
    assert not ray.is_initialized()
    code = main(["train", "--set", "scaling.num_workers=99", "--output-dir", "/tmp/never"])
    assert code == 2 and "scaling.num_workers" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_config_command_prints_param_count(capsys):
    assert main(["config", "--set", "model.preset=compact", "--set", "model.period_head=regress",
                 "--set", "model.cand_context=false", "--set", "model.fold_stats=0"]) == 0
    # the reference definition
    assert "1,513,105 parameters" in capsys.readouterr().out


def test_every_command_has_help(capsys):
    from starray.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"train", "tune", "evaluate", "predict", "export", "generate", "config"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["default", "cpu-quality"])
def test_shipped_cpu_configs_fit_this_two_core_machine(name):
    """The CPU configs users type first must start on 2 cores: workers + generators <= 2."""
    from starray.train.resources import NodeResources, ResourceError, check_fits

    cfg = validate(load_config(f"configs/train/{name}.yaml"), available_cpus=2)
    check_fits(cfg, [NodeResources("local", cpus=2.0)])
    with pytest.raises(ResourceError):  # the check can fail: one CPU cannot hold them
        check_fits(cfg, [NodeResources("local", cpus=1.0)])
