"""A regular (non-editable) install ships its own files: profiles, sbatch template, configs.

Builds a wheel from a copy of the source tree (no network: ``--no-deps``, no build
isolation), installs it into a bare folder and runs the README's commands that need a
packaged file from another folder, with only that folder on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "wandb", "build", "*.egg-info",
                              "__pycache__", ".pytest_cache", ".ruff_cache", "results")
SHIPPED = ["configs/cluster/local.yaml", "configs/cluster/gpu-example.yaml",
           "configs/train/default.yaml", "configs/train/gpu-compact.yaml",
           "configs/tune/tiny.yaml", "configs/tune/gpu.yaml", "slurm/ray-cluster.sbatch"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel's contents installed with ``pip install --target`` (its own folder)."""
    base = tmp_path_factory.mktemp("pkg")
    src = base / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(src), "-w", str(wheels)], check=True, cwd=base,
                   capture_output=True, timeout=120)
    (wheel,) = wheels.glob("starray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in SHIPPED if f"starray/resources/{f}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    # every file under configs/ and slurm/ ships, not only the ones listed above
    for folder in ("configs", "slurm"):
        for f in (ROOT / folder).rglob("*"):
            if f.is_file():
                rel = f.relative_to(ROOT).as_posix()
                assert f"starray/resources/{rel}" in names, f"{rel} is not in the wheel"
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(target), str(wheel)], check=True, capture_output=True,
                   timeout=120)
    assert not (target / "starray" / "resources" / "configs").is_symlink()
    return target


def _run(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_installed_package_finds_profiles_template_and_configs(installed, tmp_path):
    code = (
        "import starray, starray.paths as p\n"
        "from starray.slurm.profile import load_profile\n"
        "from starray.config import load_config\n"
        "from starray.tune.space import load_space\n"
        f"assert str(p.RESOURCES).startswith({str(installed)!r}), p.RESOURCES\n"
        "print(load_profile('local').partition, load_profile('gpu-example').partition)\n"
        "cfg = load_config('configs/train/gpu-compact.yaml')\n"
        "space = load_space('configs/tune/tiny.yaml', load_config(None))\n"
        "print(cfg.model.preset, space.metric)\n"
        "print(p.sbatch_template().is_file())\n"
    )
    out = _run(installed, tmp_path, "-c", code)
    assert out.returncode == 0, out.stderr
    assert "compact" in out.stdout and out.stdout.strip().endswith("True")


def test_readme_slurm_render_runs_from_another_folder(installed, tmp_path):
    out = _run(installed, tmp_path, "-m", "starray.cli", "slurm", "render", "gpu-example",
               "-o", "job.sbatch", "--", "train", "--config", "configs/train/gpu-compact.yaml")
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "job.sbatch").read_text()
    assert text.startswith("#!") and "#SBATCH" in text
