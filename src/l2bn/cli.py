"""The ``l2bn`` command: ``sweep``, ``info`` and ``bench``.

Exit status: 0 done, 1 an operating-system error (disk full, permission), 2 a bad parameter or
dataset (a one-line message naming it, before any work or file), 3 the same spec is already being
computed by another process, 130 interrupted (Ctrl-C; a sweep resumes when run again).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .data import DatasetError, dataset_names
from .profiles import OPTIMIZERS, PROFILES
from .train import PRECISIONS


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument on one line (``l2bn sweep: error: argument --lrs: ...``), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="l2bn",
        description="Companion to 'L2 Regularization versus Batch and Weight Normalization': "
        "train (η, λ) grids of the paper's 4-layer network and inspect the results.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sw = sub.add_parser("sweep", help="train one update rule's (η, λ) grid (cached by spec)",
                        description="Train every (η, λ) pair of a grid as one wide model and "
                        "store a tidy table with provenance under data/results/. An identical "
                        "spec is not trained twice.")
    sw.add_argument("--optimizer", required=True, choices=OPTIMIZERS, help="update rule")
    sw.add_argument("--profile", default="quick", choices=list(PROFILES),
                    help="smoke (seconds), quick (CPU lesson), paper (GPU); default quick")
    sw.add_argument("--dataset", default="synthetic", help=f"{dataset_names()}; default synthetic")
    sw.add_argument("--device", default="auto", help="auto, cpu or cuda; default auto")
    sw.add_argument("--lrs", type=_floats, help="learning rates η, comma-separated, increasing")
    sw.add_argument("--l2s", type=_floats,
                    help="L2 strengths λ (objective + λ‖w‖²), comma-separated, increasing")
    sw.add_argument("--epochs", type=_int, help="epochs (default from the profile)")
    sw.add_argument("--seed", type=_int, default=0, help="seed of init, data order, augmentation")
    sw.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="fp32 (default), tf32 (GPU tensor cores) or bf16 (autocast, fp32 master weights)")
    sw.add_argument("--norm", default="batch", choices=("batch", "weight", "layer", "none"),
                    help="normalisation after each conv; default batch")
    sw.add_argument("--impl", default="auto", choices=("auto", "wide", "loop"),
                    help="wide (grouped), loop (one model at a time) or auto (measured)")
    sw.add_argument("--out", help="results folder (default data/results)")
    sw.add_argument("--force", action="store_true", help="recompute even if cached")
    sw.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    info = sub.add_parser("info", help="device, torch, datasets and cached results")
    info.add_argument("--out", help="results folder (default data/results)")
    info.add_argument("--fetch-cifar10", action="store_true", help="download CIFAR-10 into data/")

    bench = sub.add_parser("bench", help="time the wide model against one model at a time",
                           description="Time training steps of the wide model, the loop over "
                           "stacked models, and separate torch.optim runs, for each M.")
    bench.add_argument("--profile", default="paper", choices=list(PROFILES),
                       help="network width and batch size to time; default paper")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda")
    bench.add_argument("--ms", type=_ints, default=[1, 7, 49], help="model counts; default 1,7,49")
    bench.add_argument("--steps", type=_int, default=5, help="steps per timed repeat")
    bench.add_argument("--repeats", type=_int, default=3, help="timed repeats (median reported)")
    bench.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32, tf32 or bf16")
    bench.add_argument("--json", help="also write the report to this JSON file")
    return parser


def _sweep(args: argparse.Namespace) -> None:
    from .results import run_sweep
    from .train import SweepSpec, validate_params

    spec = SweepSpec.from_profile(args.profile, args.optimizer, args.dataset, lrs=args.lrs,
                                  l2s=args.l2s, epochs=args.epochs, seed=args.seed, norm=args.norm,
                                  precision=args.precision)
    validate_params(spec, args.device, args.impl)  # reject a bad device before any work
    result = run_sweep(spec, device=args.device, impl=args.impl, out=args.out,
                       progress=not args.no_progress, force=args.force)
    last = result.table[result.table.epoch == result.table.epoch.max()]
    best = last.loc[last.val_err.idxmin()] if last.val_err.notna().any() else None
    print(f"{spec.n_models} models, {spec.epochs} epochs; diverged: {int(last.diverged.sum())}")
    if best is not None:
        print(f"best validation error {best.val_err:.3f} at η={best.lr:g}, λ={best.l2:g} "
              f"(test error {best.test_err:.3f})")
    print(f"table: {result.path}\nprovenance: {result.path.with_suffix('.json')}")


def _info(args: argparse.Namespace) -> None:
    import torch

    from . import __version__
    from .data import data_root, fetch_cifar10
    from .results import list_results, results_dir

    print(f"l2bn {__version__}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        print("GPU: none (sweeps run on the CPU)")
    root = data_root()
    if args.fetch_cifar10:
        print(f"CIFAR-10 fetched into {fetch_cifar10(root)}")
    cifar = root / "cifar-10-batches-py"
    print(f"data folder: {root}")
    print(f"CIFAR-10: {'present' if cifar.exists() else 'absent (l2bn info --fetch-cifar10)'}")
    rows = list_results(args.out)
    print(f"cached results in {results_dir(args.out)}: {len(rows)}")
    for r in rows:
        print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))


def _bench(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from .bench import run_bench

    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name}: must be a positive integer; got {getattr(args, name)}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ValueError(f"json: the folder of {args.json} does not exist")
    report = run_bench(args.profile, tuple(args.ms), args.device, args.steps, args.repeats,
                       precision=args.precision)
    cols = ("M", "variant", "model_epochs_per_s", "vs_separate", "tflops", "peak_fraction",
            "peak_mem_mb")
    print("  ".join(f"{c:>18}" for c in cols))
    for row in report["rows"]:
        print("  ".join(f"{row.get(c, float('nan')):>18.4g}" if not isinstance(row.get(c), str)
                        else f"{row[c]:>18}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(report["summary"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from .results import SweepRunning

    try:
        {"sweep": _sweep, "info": _info, "bench": _bench}[args.command](args)
    except (ValueError, DatasetError) as err:
        print(f"l2bn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except SweepRunning as err:
        print(f"l2bn {args.command}: error: {err}", file=sys.stderr)
        return 3
    except OSError as err:
        print(f"l2bn {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "sweep":
            print("\nl2bn: interrupted. Finished epochs are checkpointed; to resume, run the same "
                  f"command again: l2bn {shlex.join(argv)}", file=sys.stderr)
        else:
            print("\nl2bn: interrupted.", file=sys.stderr)
        return 130
    return 0
