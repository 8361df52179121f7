"""The prepared device check: training-step throughput against the reference, FLOPs, MFU.

Run it through ``benchmarks/gpu_check.sh`` (which installs carried wheels first). Stages,
each printed as it ends (unbuffered):

0. environment: torch, device, which optional packages exist (ray, nifty_ls);
1. first stage (about 30 s): the compact (CPU: tiny) step on tensors in memory, to fail
   fast before the long stages;
2. per preset, samples/s of
   (a) the reference formulation: fp32, one candidate-branch pass per candidate in a
       Python loop (as the reference system did; written here, same weights);
   (b) ours: batched candidates, bf16 autocast on CUDA, fused AdamW, the project's loss,
       on tensors already on the device (``--compile``: torch.compile as well);
   (c) ours fed by the generator pool through Ray Train (``starray.train.driver``), one
       worker; skipped with a note when Ray or nifty-ls is missing, or with ``--quick``;
   host syncs in one step of (b) (CUDA sync debug mode); model FLOPs per sample
   (forward + backward, counted by
   ``torch.utils.flop_counter.FlopCounterMode`` on one step), MFU against ``--peak-tflops``
   (default: 989 dense bf16 for H100/H200; none on CPU), peak memory;
3. stars/s of the data library in ``--generators`` processes (needs nifty-ls).

One table at the end; JSON to ``--out``. ``--cpu`` runs every stage on CPU (tiny shapes);
``--cpu --quick`` is the suite's test (< 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

T0 = time.perf_counter()


def say(msg: str) -> None:
    """A progress line with the elapsed time (stdout, flushed)."""
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def have(module: str) -> bool:
    """True when ``module`` imports."""
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


# ----------------------------------------------------------------------------- inputs
def make_inputs(n: int, n_cand: int, device: torch.device, real: bool) -> dict[str, torch.Tensor]:
    """A batch of ``n`` stars as tensors on ``device``: real synthetic stars when nifty-ls is
    there (``real``), else random inputs of the same shapes (throughput does not care)."""
    from starray.data.features import FOLD_BINS, LC_LENGTH, PGRAM_BINS
    from starray.model.inference import to_tensors

    if real:
        from starray.data.dataset import concat, make_batch

        parts = [make_batch(min(256, n - s), 0, 0, i, n_candidates=n_cand, harmonics=True)[0]
                 for i, s in enumerate(range(0, n, 256))]
        return to_tensors(concat(parts), device)
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(n, generator=g)
    p1[torch.rand(n, generator=g) < 0.2] = float("nan")
    cand = torch.rand(n, n_cand, generator=g)
    cand[:, 0] = torch.nan_to_num(p1, nan=0.5)
    batch = {"lc": torch.randn(n, 1, LC_LENGTH, generator=g),
             "pgram": torch.rand(n, 1, PGRAM_BINS, generator=g),
             "folded": torch.randn(n, n_cand, FOLD_BINS, generator=g), "cand_logp": cand,
             "cand_stats": torch.rand(n, n_cand, 2, generator=g),
             "label": torch.randint(0, 14, (n,), generator=g), "p1": p1,
             "p2": torch.full((n,), float("nan"))}
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------- formulations
def reference_forward(model: torch.nn.Module, lc, pgram, folded, cand_logp, cand_stats
                      ) -> dict[str, torch.Tensor]:
    """The reference formulation: one candidate-branch pass per candidate, in Python."""
    b, n, length = folded.shape
    embs = []
    for j in range(n):
        channels = [folded[:, j], cand_logp[:, j, None].expand(b, length)]
        for k in range(model.fold_stats):
            channels.append(cand_stats[:, j, k, None].expand(b, length))
        embs.append(model.cand_branch(torch.stack(channels, dim=1)))
    cand_emb = torch.stack(embs, dim=1)
    logits = model.cand_score(cand_emb).squeeze(-1)
    weights = torch.softmax(logits, dim=1)
    pooled = (weights[..., None] * cand_emb).sum(1)
    merged = model.fusion(torch.cat([model.lc_branch(lc), model.pgram_branch(pgram), pooled], 1))
    return {"logits": model.class_head(merged), "p1": model.p1_head(merged).squeeze(-1),
            "p2": model.p2_head(merged).squeeze(-1), "cand_logits": logits,
            "cand_weights": weights, "chosen": logits.argmax(1)}


def make_step(model, optimizer, train_cfg, device, bf16: bool, reference: bool):
    """One optimizer step on a tensor batch (returns the loss tensor, no host sync)."""
    from starray.train.loop import compute_loss

    keys = ("lc", "pgram", "folded", "cand_logp", "cand_stats")
    fwd = (lambda x: reference_forward(model, *(x[k] for k in keys))
           ) if reference else (lambda x: model(*(x[k] for k in keys)))

    def step(x: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = fwd(x)
            loss, _ = compute_loss(out, x, train_cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, x, steps: int, warmup: int, device: torch.device, max_s: float) -> float:
    """samples/s of ``step`` on ``x`` over ``steps`` steps (stops early after ``max_s``)."""
    for _ in range(warmup):
        step(x)
    _sync(device)
    t0, done = time.perf_counter(), 0
    while done < steps:
        step(x)
        done += 1
        if done % 5 == 0:
            _sync(device)
            if time.perf_counter() - t0 > max_s:
                break
    _sync(device)
    return done * len(x["label"]) / (time.perf_counter() - t0)


def flops_per_sample(step, x) -> float:
    """Counted FLOPs of one training step (forward + backward) per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(x)
    return counter.get_total_flops() / len(x["label"])


def count_syncs(step, x) -> int:
    """Device-to-host synchronizations in one step (CUDA's sync debug mode, as warnings)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def peak_memory_mib(device: torch.device) -> float:
    """Peak allocated GPU memory (CUDA) or peak RSS of this process (CPU), MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_preset(preset: str, args: argparse.Namespace, device: torch.device, real: bool
                   ) -> dict[str, Any]:
    """(a) reference, (b) ours [compiled], FLOPs, MFU, memory of one preset."""
    from starray.config import load_config, resolved_model
    from starray.model.hybrid import build_model
    from starray.train.loop import build_optimizer

    cfg = load_config(None, [f"model.preset={preset}"])
    dims = resolved_model(cfg.model)
    cuda = device.type == "cuda"
    x = make_inputs(args.batch_size, args.n_candidates, device, real)
    row: dict[str, Any] = {"preset": preset, "batch_size": args.batch_size,
                           "device": torch.cuda.get_device_name(device) if cuda else "cpu"}
    torch.manual_seed(0)
    ref_model = build_model({**dims, "period_head": "regress"}).to(device)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-3)
    ref_step = make_step(ref_model, ref_opt, cfg.train, device, bf16=False, reference=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    row["reference_samples_per_s"] = timed(ref_step, x, args.steps, 2, device, args.max_stage_s)
    row["reference_flops_per_sample"] = flops_per_sample(ref_step, x)
    del ref_model, ref_opt, ref_step

    model = build_model(dims).to(device)
    opt = build_optimizer(model, cfg.train, fused=cuda)
    eager = make_step(model, opt, cfg.train, device, bf16=cuda, reference=False)
    row["flops_per_sample"] = flops_per_sample(eager, x)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    row["ours_samples_per_s"] = timed(eager, x, args.steps, 3, device, args.max_stage_s)
    row["peak_memory_mib"] = peak_memory_mib(device)
    if cuda:
        row["host_syncs_per_step"] = count_syncs(eager, x)
    if args.compile:
        compiled = make_step(torch.compile(model), opt, cfg.train, device, bf16=cuda,
                             reference=False)
        row["ours_compiled_samples_per_s"] = timed(compiled, x, args.steps, 3, device,
                                                   args.max_stage_s)
    best = max(row["ours_samples_per_s"], row.get("ours_compiled_samples_per_s", 0.0))
    row["speedup_vs_reference"] = best / row["reference_samples_per_s"]
    peak = args.peak_tflops if args.peak_tflops is not None else default_peak_tflops(device)
    row["peak_tflops"] = peak
    row["mfu"] = (best * row["flops_per_sample"] / (peak * 1e12)) if peak else None
    return row


def default_peak_tflops(device: torch.device) -> float | None:
    """Dense bf16 peak of known GPUs (TFLOP/s); None where unknown (CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return 989.0 if ("H100" in name or "H200" in name) else None


# ----------------------------------------------------------------------------- pool-fed
def ray_train_rate(preset: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """(c) samples/s of a real Ray Train run fed by the generator pool (second epoch)."""
    import ray

    from starray.config import load_config
    from starray.train.driver import read_history, run_training

    cuda = args.device == "cuda"
    steps = max(4, args.steps // 2)
    overrides = [f"model.preset={preset}", f"data.batch_size={args.batch_size}",
                 f"data.stars_per_epoch={steps * args.batch_size}", "data.val_stars=64",
                 f"data.generators={args.generators}", "data.harmonics=true",
                 f"data.n_candidates={args.n_candidates}", "train.epochs=2", "train.patience=0",
                 "scaling.num_workers=1", f"scaling.use_gpu={str(cuda).lower()}",
                 f"scaling.cpus_per_worker={2 if cuda else 1}",
                 f"data.generator_cpus={1.0 if cuda else 0.5}", "wandb.mode=disabled",
                 f"output_dir={out_dir}", f"name=ray-{preset}"]
    cfg = load_config(None, overrides)
    try:
        run_training(cfg)
    finally:
        ray.shutdown()
    hist = read_history(cfg.run_dir)
    return {"ray_train_samples_per_s": hist[-1]["samples_per_s"]}


def _gen_chunk(args: tuple[int, int, int]) -> int:
    from starray.data.dataset import make_batch

    n, index, n_cand = args
    return len(make_batch(n, 1, 0, index, n_candidates=n_cand, harmonics=True)[0]["label"])


def data_rate(generators: int, stars: int, n_cand: int) -> dict[str, Any]:
    """stars/s of the data library in ``generators`` processes (one BLAS thread each)."""
    chunk = 64
    jobs = [(chunk, i, n_cand) for i in range(max(generators, stars // chunk))]
    with ProcessPoolExecutor(generators) as ex:
        list(ex.map(_gen_chunk, jobs[:generators]))  # warm-up: imports, plans
        t0 = time.perf_counter()
        n = sum(ex.map(_gen_chunk, jobs))
    return {"generators": generators, "stars_per_s": n / (time.perf_counter() - t0)}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the stages, print the table, write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="run every stage on CPU (tiny shapes)")
    p.add_argument("--quick", action="store_true", help="smallest sizes; skip the Ray stage")
    p.add_argument("--presets", nargs="+", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    p.add_argument("--max-stage-s", type=float, default=None, help="cap per timed measurement")
    p.add_argument("--n-candidates", type=int, default=6)
    p.add_argument("--generators", type=int, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "benchmarks/results"),
                                                 "gpu_check.json"))
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    args.device = device.type
    args.presets = args.presets or (["compact", "optimal", "large"] if cuda else ["tiny"])
    args.batch_size = args.batch_size or (256 if cuda else (8 if args.quick else 32))
    args.steps = args.steps or (50 if cuda else (3 if args.quick else 10))
    args.max_stage_s = args.max_stage_s or (20.0 if cuda else (5.0 if args.quick else 15.0))
    args.generators = args.generators or (16 if cuda else 2)
    args.compile = cuda if args.compile is None else args.compile
    if not cuda:
        torch.set_num_threads(1 if args.quick else max(1, min(2, os.cpu_count() or 1)))

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "ray": have("ray"), "nifty_ls": have("nifty_ls"), "cpus": os.cpu_count()}
    say(f"stage 0: environment {env}")
    real = env["nifty_ls"] and not args.quick  # --quick: random inputs of the real shapes
    result: dict[str, Any] = {"env": env, "args": {k: v for k, v in vars(args).items()},
                              "rows": [], "notes": []}
    if not env["nifty_ls"]:
        result["notes"].append("nifty-ls missing: stages (a)/(b) used random inputs of the "
                               "real shapes; (c) and the data rate were skipped")

    first = "compact" if cuda else "tiny"
    say(f"stage 1 (first, <= 30 s): {first} on {device}, tensors in memory")
    quick_args = argparse.Namespace(**{**vars(args), "steps": min(args.steps, 10),
                                       "max_stage_s": 5.0, "compile": False})
    r = measure_preset(first, quick_args, device, real)
    say(f"stage 1 ok: reference {r['reference_samples_per_s']:.0f}/s, ours "
        f"{r['ours_samples_per_s']:.0f}/s, {r['flops_per_sample'] / 1e6:.1f} MFLOP/sample")
    result["first_stage"] = r

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for preset in args.presets:
        say(f"stage 2: {preset}, batch {args.batch_size}, {args.steps} steps each"
            + (" (+ compiled)" if args.compile else ""))
        row = measure_preset(preset, args, device, real)
        if args.quick or not (env["ray"] and real):
            why = "--quick" if args.quick else "Ray or nifty-ls missing"
            row["ray_train_samples_per_s"] = None
            result["notes"].append(f"{preset}: (c) Ray Train stage skipped ({why})")
        else:
            say(f"stage 2c: {preset} through Ray Train, fed by {args.generators} generators")
            row.update(ray_train_rate(preset, args, out.parent / "gpu_check_runs"))
            best = max(row["ours_samples_per_s"], row.get("ours_compiled_samples_per_s", 0.0))
            row["ray_over_memory"] = row["ray_train_samples_per_s"] / best
        say(f"stage 2 {preset}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                               f"{k}={v}" for k, v in row.items()))
        result["rows"].append(row)
        out.write_text(json.dumps(result, indent=1))  # partial results survive a timeout

    if env["nifty_ls"]:
        n = 128 if args.quick else (8192 if cuda else 512)
        say(f"stage 3: data library, {args.generators} processes, {n} stars")
        result["data"] = data_rate(args.generators, n, args.n_candidates)
        say(f"stage 3: {result['data']['stars_per_s']:.0f} stars/s")

    print_table(result)
    out.write_text(json.dumps(result, indent=1))
    say(f"wrote {out}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    """The one table: per preset, samples/s of (a), (b), (c), FLOPs, MFU, memory."""
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print(f"\n{'preset':8s} {'(a) ref/s':>10s} {'(b) ours/s':>10s} {'compiled/s':>10s} "
          f"{'(c) ray/s':>10s} {'x ref':>6s} {'MFLOP/smp':>10s} {'MFU':>6s} {'peak MiB':>9s}")
    for r in result["rows"]:
        print(f"{r['preset']:8s} {r['reference_samples_per_s']:10.1f} "
              f"{r['ours_samples_per_s']:10.1f} "
              f"{f(r.get('ours_compiled_samples_per_s'), '10.1f'):>10s} "
              f"{f(r.get('ray_train_samples_per_s'), '10.1f'):>10s} "
              f"{r['speedup_vs_reference']:6.2f} {r['flops_per_sample'] / 1e6:10.1f} "
              f"{f(r['mfu'], '6.1%'):>6s} {r['peak_memory_mib']:9.0f}")
    if "data" in result:
        d = result["data"]
        print(f"data library: {d['stars_per_s']:.0f} stars/s with {d['generators']} processes")
    for note in result["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
