"""A sharded dataset on disk: written once by `starray generate`, trained on many times.

Layout of a dataset folder ``DIR``::

    DIR/plan.json                  what is being made (written first; a re-run must match)
    DIR/shard-00000/lc.npy ...     one .npy per batch key (leading star axis)
    DIR/shard-00000/shard.json     stars, and per key shape, dtype and sha256
    DIR/manifest.json              written last: plan + every shard's meta; "complete": true

Shard ``k`` holds ``make_batch(stars_k, seed, 0, k, ..., space="fixed")``: a pure function
of (seed, k), so a dataset made by any number of workers is the same, and a shard lost
or left half-written is made again alone. A shard is written into a temporary folder and
renamed into place, so a shard folder that exists is complete. Reads are memory-mapped
(``np.load(mmap_mode="r")``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from starray.config import ConfigError

FORMAT = "starray-shards"
VERSION = 2  # 2: cand_stats (the folds' statistics), 8 candidates
SPACE = "fixed"
# the data settings that decide what the stars are (checked against a training config)
DATA_KEYS = ("min_days", "max_days", "points_per_day", "noise", "n_candidates", "harmonics")


class DatasetError(ConfigError):
    """A dataset folder is missing, incomplete, corrupt or made with other settings."""


def shard_name(k: int) -> str:
    """Folder name of shard ``k``."""
    return f"shard-{k:05d}"


def plan(seed: int, data: dict[str, Any], stars: int, shard_stars: int) -> dict[str, Any]:
    """What a dataset of ``stars`` stars in shards of ``shard_stars`` is (JSON-able)."""
    n_shards = -(-stars // shard_stars)
    sizes = [min(shard_stars, stars - k * shard_stars) for k in range(n_shards)]
    return {"format": FORMAT, "version": VERSION, "space": SPACE, "seed": int(seed),
            "data": {k: data[k] for k in DATA_KEYS}, "stars": int(stars),
            "shard_stars": int(shard_stars), "shard_sizes": sizes}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).data).hexdigest()


def start(root: str | os.PathLike, the_plan: dict[str, Any]) -> Path:
    """Create ``root`` with ``plan.json``, or check that an existing one matches."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "plan.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != the_plan:
            diff = sorted(k for k in set(old) | set(the_plan) if old.get(k) != the_plan.get(k))
            raise DatasetError(f"{root}: holds a dataset made with other settings "
                               f"({', '.join(diff)} differ); use another folder or the same "
                               "settings to resume it")
    else:
        _write_json(path, the_plan)
    return root


def shard_done(root: str | os.PathLike, k: int) -> bool:
    """True when shard ``k`` is complete (its folder exists with its shard.json)."""
    return (Path(root) / shard_name(k) / "shard.json").exists()


def write_shard(root: str | os.PathLike, k: int, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write shard ``k`` atomically (temp folder, then rename); returns its meta."""
    root = Path(root)
    final = root / shard_name(k)
    tmp = root / f".{shard_name(k)}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    meta: dict[str, Any] = {"index": k, "stars": int(len(next(iter(batch.values())))),
                            "keys": {}}
    for key, arr in batch.items():
        arr = np.ascontiguousarray(arr)
        np.save(tmp / f"{key}.npy", arr)
        meta["keys"][key] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                             "sha256": _sha256(arr)}
    _write_json(tmp / "shard.json", meta)
    with open(tmp / "shard.json") as fh:  # data on disk before the folder appears
        os.fsync(fh.fileno())
    if final.exists():  # an incomplete leftover (no shard.json): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    return meta


def read_shard_meta(root: str | os.PathLike, k: int) -> dict[str, Any]:
    """shard.json of shard ``k``."""
    return json.loads((Path(root) / shard_name(k) / "shard.json").read_text())


def finish(root: str | os.PathLike, the_plan: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json (plan + every shard's meta) once all shards are done."""
    root = Path(root)
    shards = [read_shard_meta(root, k) for k in range(len(the_plan["shard_sizes"]))]
    manifest = {**the_plan, "complete": True, "shards": shards}
    _write_json(root / "manifest.json", manifest)
    return manifest


@dataclass(frozen=True)
class DatasetInfo:
    """A checked dataset: what a training run needs to know (small, picklable)."""

    path: str
    seed: int
    data: dict[str, Any]
    shard_sizes: list[int]
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def stars(self) -> int:
        """Stars in the whole dataset."""
        return sum(self.shard_sizes)


def open_dataset(path: str | os.PathLike, data_cfg: Any | None = None,
                 verify: bool = False) -> DatasetInfo:
    """Check a dataset folder and return its info; DatasetError names what is wrong.

    ``data_cfg`` (a DataConfig): its star settings must match the dataset's. ``verify``:
    also recompute every array's sha256 (reads the whole dataset).
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"data.path: {root} does not exist (make it with `starray generate "
                           f"--format shards --out {root}`)")
    mpath = root / "manifest.json"
    if not mpath.exists():
        hint = ("generation did not finish; run the same `starray generate` again to resume"
                if (root / "plan.json").exists() else "not a starray dataset")
        raise DatasetError(f"data.path: {root} has no manifest.json ({hint})")
    try:
        man = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"data.path: {mpath} is not valid JSON: {e}") from e
    if man.get("format") == FORMAT and man.get("version") != VERSION:
        raise DatasetError(f"data.path: {root} is a {FORMAT} v{man.get('version')} dataset; "
                           f"this starray reads v{VERSION} (its model inputs changed): make "
                           f"it again with `starray generate --format shards --out {root}`")
    if man.get("format") != FORMAT or man.get("version") != VERSION or not man.get("complete"):
        raise DatasetError(f"data.path: {mpath} is not a complete {FORMAT} v{VERSION} manifest")
    if data_cfg is not None:
        diff = [f"data.{k}: {getattr(data_cfg, k)!r} here, {man['data'][k]!r} in the dataset"
                for k in DATA_KEYS if getattr(data_cfg, k) != man["data"].get(k)]
        if diff:
            raise DatasetError(f"data.path: {root} was made with other star settings: "
                               + "; ".join(diff))
    keys = man["shards"][0]["keys"] if man["shards"] else {}
    for k, size in enumerate(man["shard_sizes"]):
        meta = man["shards"][k]
        for key, km in meta["keys"].items():
            f = root / shard_name(k) / f"{key}.npy"
            if not f.exists():
                raise DatasetError(f"data.path: {f} is missing (dataset incomplete)")
            try:
                arr = np.load(f, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise DatasetError(f"data.path: {f} is not a readable .npy file: {e}") from e
            if list(arr.shape) != km["shape"] or str(arr.dtype) != km["dtype"] \
                    or arr.shape[0] != size:
                raise DatasetError(f"data.path: {f} has shape {arr.shape} {arr.dtype}, the "
                                   f"manifest says {km['shape']} {km['dtype']}")
            if verify and _sha256(arr) != km["sha256"]:
                raise DatasetError(f"data.path: {f} does not match its sha256 in the manifest "
                                   "(corrupt)")
    return DatasetInfo(path=str(root), seed=int(man["seed"]), data=dict(man["data"]),
                       shard_sizes=list(man["shard_sizes"]), keys=keys)


def load_shard(info: DatasetInfo, k: int) -> dict[str, np.ndarray]:
    """Shard ``k`` as memory-mapped read-only arrays."""
    d = Path(info.path) / shard_name(k)
    return {key: np.load(d / f"{key}.npy", mmap_mode="r") for key in info.keys}


class RankReader:
    """One DDP rank's batches from a dataset: it reads only its own shards.

    Rank ``r`` of ``world`` owns shards ``r, r + world, ...``. Every rank takes the same
    number of steps (the smallest rank's stars // batch_size, as DDP needs), and each
    epoch visits the rank's stars in a new order seeded by (seed, epoch, rank).
    """

    def __init__(self, info: DatasetInfo, rank: int, world: int, batch_size: int,
                 seed: int = 0) -> None:
        n_shards = len(info.shard_sizes)
        if world > n_shards:
            raise DatasetError(f"data.path: {info.path} has {n_shards} shard(s), fewer than the "
                               f"{world} training workers; regenerate it with smaller shards "
                               "(--shard-stars) or use fewer workers")
        self.info, self.rank, self.world, self.batch_size, self.seed = \
            info, rank, world, batch_size, seed
        self.own = list(range(rank, n_shards, world))
        per_rank = [sum(info.shard_sizes[r::world]) for r in range(world)]
        self.n_steps = min(per_rank) // batch_size
        if self.n_steps < 1:
            raise DatasetError(f"data.path: {info.path}: a worker's shards hold {min(per_rank)} "
                               f"stars, fewer than one batch of data.batch_size={batch_size}")
        self._shards: list[dict[str, np.ndarray]] | None = None
        sizes = np.array([info.shard_sizes[k] for k in self.own])
        self._starts = np.concatenate([[0], np.cumsum(sizes)])

    def steps_per_epoch(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return self.n_steps

    def _open(self) -> list[dict[str, np.ndarray]]:
        if self._shards is None:
            self._shards = [load_shard(self.info, k) for k in self.own]
        return self._shards

    def epoch(self, epoch: int, start_step: int = 0):
        """Yield this rank's batches of ``epoch`` (dicts of in-memory arrays)."""
        shards = self._open()
        total = int(self._starts[-1])
        perm = np.random.default_rng([self.seed, epoch, self.rank, 7]).permutation(total)
        for step in range(start_step, self.n_steps):
            rows = perm[step * self.batch_size:(step + 1) * self.batch_size]
            which = np.searchsorted(self._starts, rows, side="right") - 1
            parts: dict[str, list[np.ndarray]] = {key: [] for key in shards[0]}
            for s in np.unique(which):
                local = np.sort(rows[which == s] - self._starts[s])
                for key, arr in shards[s].items():
                    parts[key].append(arr[local])  # sorted rows: forward mmap reads
            # the parts hold the rows sorted (shards cover increasing row ranges)
            pos = np.searchsorted(np.sort(rows), rows)
            yield {key: np.concatenate(v)[pos] for key, v in parts.items()}
