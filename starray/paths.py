"""Files that ship inside the package: default configs, cluster profiles, the sbatch template.

In a checkout, ``starray/resources/configs`` and ``starray/resources/slurm`` are symlinks
to the repository's ``configs/`` and ``slurm/`` folders; a wheel (``pip install .``)
holds real copies there (package data). Paths that the README uses, such as
``configs/tune/tiny.yaml``, are read from the current folder when they exist there and
from the package otherwise, so the commands work from any folder after a regular install.
"""

from __future__ import annotations

import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
PACKAGED_PREFIXES = ("configs", "slurm")


def profile_dir() -> Path:
    """Folder of the shipped cluster profiles (``configs/cluster/*.yaml``)."""
    return RESOURCES / "configs" / "cluster"


def sbatch_template() -> Path:
    """The shipped sbatch template (``slurm/ray-cluster.sbatch``)."""
    return RESOURCES / "slurm" / "ray-cluster.sbatch"


def resolve_packaged(path: str | os.PathLike) -> Path:
    """``path`` if it exists; else the packaged file of that repository path; else ``path``.

    Only relative paths under ``configs/`` or ``slurm/`` fall back to the package; any
    other missing path is returned unchanged so the caller reports it as missing.

    Examples
    --------
    >>> resolve_packaged("configs/tune/tiny.yaml").name
    'tiny.yaml'
    """
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute() or not p.parts or p.parts[0] not in PACKAGED_PREFIXES:
        return p
    packaged = RESOURCES / p
    return packaged if packaged.exists() else p
