"""The ``l2bn`` command: ``sweep``, ``info`` and ``bench``.

Exit status, decided by the type of the error (``errors.L2bnError.exit_code``): 0 done; 1 an
operating-system error (disk full, permission, out of memory) or a damaged stored file; 2 a bad
parameter or dataset (a one-line message naming it, before any work or file); 3 the same spec is
already being computed by another process; 130 interrupted (Ctrl-C; a sweep resumes when run again).

Nothing heavy is imported at the top: torch and the library load inside ``main``, so that Ctrl-C
while they load ends in one line, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from .errors import L2bnError, ParameterError

# What argparse would take for an option although it is a number: "-1e-3", "-.5", "-inf" (argparse
# knows only "-1" and "-0.5" as negative numbers).
_NUMBERISH = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)
# float32, the precision the models train in: its smallest normal number and its relative precision.
FLOAT32_TINY, FLOAT32_EPS = 2.0**-126, 2.0**-23


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


def _hyper(text: str) -> dict[str, float]:
    """``rho=0.95,eps=1e-7`` as a mapping; a value written as an integer stays an integer, so that the
    command recorded for a spec (``results.spec_command``) gives back exactly that spec."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not item:
            continue
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected name=value pairs such as rho=0.95; got {text!r}")
        if name in out:
            raise argparse.ArgumentTypeError(f"{name} is given twice in {text!r}")
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number; got {value!r}") from None
        exact_int = re.fullmatch(r"[-+]?\d{1,15}", value) is not None
        out[name] = int(value) if exact_int else number
    return out


def join_numbers(argv: list[str]) -> list[str]:
    """``--l2s -1e-3`` as ``--l2s=-1e-3``: argparse takes a token such as "-1e-3" or "-inf" for an
    option, so a negative value would never reach the check that says what is accepted."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if _NUMBERISH.match(token) and prev.startswith("--") and "=" not in prev and prev != "--":
            out[-1] = f"{prev}={token}"
        else:
            out.append(token)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``l2bn``; building it imports the library (and torch)."""
    from .data import dataset_names
    from .profiles import PROFILES
    from .rules import trainable_rules
    from .spec import PRECISIONS

    parser = _Parser(
        prog="l2bn",
        description="Companion to 'L2 Regularization versus Batch and Weight Normalization': "
        "train (η, λ) grids of the paper's 4-layer network and inspect the results.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _sweep_parser(sub, PROFILES, PRECISIONS, trainable_rules(), dataset_names())
    info = sub.add_parser("info", help="device, torch, datasets and cached results")
    info.add_argument("--out", help="results folder (default data/results)")
    info.add_argument("--fetch-cifar10", action="store_true", help="download CIFAR-10 into data/")
    _bench_parser(sub, PROFILES, PRECISIONS, trainable_rules())
    return parser


def _sweep_parser(sub: Any, profiles: Any, precisions: Any, rules: Any, datasets: str) -> None:
    from .spec import EVALUATIONS, IMPLS

    sw = sub.add_parser("sweep", help="train one update rule's (η, λ) grid (cached by spec)",
                        description="Train every (η, λ) pair of a grid as one wide model and "
                        "store a tidy table with provenance under data/results/. An identical "
                        "spec is not trained twice.")
    sw.add_argument("--optimizer", required=True, choices=rules, help="update rule")
    sw.add_argument("--profile", default="quick", choices=list(profiles),
                    help="smoke (seconds), quick (CPU lesson), paper (GPU); default quick")
    sw.add_argument("--dataset", default="synthetic", help=f"{datasets}; default synthetic")
    sw.add_argument("--device", default="auto", help="auto, cpu or cuda; default auto")
    sw.add_argument("--lrs", type=_floats, help="learning rates η, comma-separated, increasing")
    sw.add_argument("--l2s", type=_floats,
                    help="L2 strengths λ (objective + λ‖w‖²), comma-separated, increasing")
    sw.add_argument("--epochs", type=_int, help="epochs (default from the profile)")
    sw.add_argument("--seed", type=_int, default=0, help="seed of init, data order, augmentation")
    sw.add_argument("--precision", default="fp32", choices=precisions,
                    help="fp32 (default), tf32 (GPU tensor cores) or bf16 (autocast, fp32 master weights)")
    sw.add_argument("--norm", default="batch", choices=("batch", "weight", "layer", "none"),
                    help="normalisation after each conv; default batch")
    sw.add_argument("--evaluate", default=EVALUATIONS[0], choices=EVALUATIONS,
                    help="measure validation and test error before each drop of η and at the end "
                    "(phase_ends, default) or after every epoch")
    sw.add_argument("--impl", default="auto", choices=IMPLS,
                    help="wide (all models grouped), rows (the models of one η grouped), loop (one "
                    "model at a time) or auto (the fastest, measured)")
    sw.add_argument("--n-train", type=_int, help="training images (default from the profile)")
    sw.add_argument("--n-val", type=_int, help="validation images, held out of the training set")
    sw.add_argument("--n-test", type=_int, help="test images (default from the profile)")
    sw.add_argument("--batch-size", type=_int, help="batch size (default from the profile)")
    sw.add_argument("--widths", type=_ints, help="channels of the four conv layers, e.g. 8,16,32,64")
    sw.add_argument("--hyper", type=_hyper, help="the rule's hyperparameters, e.g. rho=0.95 or "
                    "rho1=0.9,rho2=0.99,eps=1e-8 (default: the paper's)")
    sw.add_argument("--no-augment", action="store_true", help="train without translations and flips")
    sw.add_argument("--out", help="results folder (default data/results)")
    sw.add_argument("--force", action="store_true", help="recompute even if cached")
    sw.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ex = sw.add_argument_group("where to compute", "the Slurm options override those of the TOML "
                               "file --slurm-config ($L2BN_SLURM_CONFIG, else data/slurm.toml)")
    ex.add_argument("--executor", choices=("local", "slurm"),
                    help="local (this machine) or slurm (a job array); default $L2BN_EXECUTOR or local")
    ex.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    ex.add_argument("--time-min", type=_int, help="Slurm time limit per task in minutes (default 240)")
    ex.add_argument("--gpus-per-task", type=_int, help="GPUs per Slurm task (default 0)")
    ex.add_argument("--cpus-per-task", type=_int, help="CPUs, and torch threads, per Slurm task (default 1)")
    ex.add_argument("--array-parallelism", type=_int, help="Slurm tasks running at once (default 32)")
    ex.add_argument("--mem-gb", type=float, help="memory per Slurm task in GB (default: the partition's)")
    ex.add_argument("--slurm-config", help="TOML file of the Slurm options")


def _bench_parser(sub: Any, profiles: Any, precisions: Any, rules: Any) -> None:
    from .rules import MAIN

    bench = sub.add_parser("bench", help="time the wide model against one model at a time",
                           description="Time training steps of the wide model, the loop over "
                           "stacked models, and separate torch.optim runs, for each M.")
    bench.add_argument("--profile", default="paper", choices=list(profiles),
                       help="network width and batch size to time; default paper")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda")
    bench.add_argument("--ms", type=_ints, default=[1, 7, 49], help="model counts; default 1,7,49")
    bench.add_argument("--steps", type=_int, default=5, help="steps per timed repeat")
    bench.add_argument("--repeats", type=_int, default=3, help="timed repeats (median reported)")
    bench.add_argument("--optimizer", default=MAIN.name, choices=rules,
                       help=f"update rule of every variant; default {MAIN.name}")
    bench.add_argument("--precision", default="fp32", choices=precisions, help="fp32, tf32 or bf16")
    bench.add_argument("--threads", type=_int, help="CPU threads (default: all cores; the book's "
                       "workers run on one each)")
    bench.add_argument("--json", help="also write the report to this JSON file")


def sweep_spec(args: argparse.Namespace) -> Any:
    """The ``SweepSpec`` that ``l2bn sweep`` computes for the parsed ``args`` (an option left out
    keeps the profile's value; ``results.spec_command`` writes the command back)."""
    from .spec import SweepSpec

    return SweepSpec.from_profile(
        args.profile, args.optimizer, args.dataset, lrs=args.lrs, l2s=args.l2s, epochs=args.epochs,
        seed=args.seed, norm=args.norm, precision=args.precision, n_train=args.n_train,
        n_val=args.n_val, n_test=args.n_test, batch_size=args.batch_size, widths=args.widths,
        hyper=args.hyper, augment=not args.no_augment, evaluate=args.evaluate)


def check_out(out: str | None) -> None:
    """``ParameterError('out: ...')`` for a results folder that cannot be one: an empty path (it
    would mean the current folder) or a path through an existing file."""
    if out is None:
        return
    if not out.strip():
        raise ParameterError("out: the path is empty (that would be the current folder); give a "
                             "folder for the results, or leave --out out for data/results")
    path = Path(out)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ParameterError(f"out: {existing} exists and is not a folder; give a folder for the results")


def check_learning_rates(lrs: tuple[float, ...]) -> None:
    """Refuse an η that float32, in which the models train, cannot hold (below its smallest normal
    number: the steps would be zero) and warn, on one line, about an η below float32's relative
    precision, whose steps round away unless the gradient is large."""
    zero = [x for x in lrs if x < FLOAT32_TINY]
    if zero:
        raise ParameterError(f"lrs: η = {zero[0]!r} is below float32's smallest normal number "
                             f"({FLOAT32_TINY:.3g}), so no model would move; choose η ≥ 1e-37")
    tiny = [x for x in lrs if x < FLOAT32_EPS]
    if tiny:
        print(f"l2bn sweep: warning: lrs: η = {tiny[0]!r} is below float32's relative precision "
              f"({FLOAT32_EPS:.3g}); a step that small next to a weight rounds away, so these models "
              "may not move", file=sys.stderr)


def _sweep(args: argparse.Namespace) -> None:
    from .executor import SlurmOptions, check, executor_name, run_specs
    from .spec import validate_params

    check_out(args.out)
    spec = sweep_spec(args)
    executor = executor_name(args.executor)
    # reject a bad device before any work (a cluster's nodes may have the GPU this machine lacks)
    validate_params(spec, args.device if executor == "local" else "auto", args.impl)
    check_learning_rates(spec.lrs)
    slurm = SlurmOptions.load(
        args.slurm_config, partition=args.partition, time_min=args.time_min,
        gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task,
        array_parallelism=args.array_parallelism, mem_gb=args.mem_gb) if executor == "slurm" else None
    [result] = check(run_specs([spec], executor, device=args.device, impl=args.impl, out=args.out,
                               progress=not args.no_progress, force=args.force, slurm=slurm))
    last = result.table[result.table.epoch == result.table.epoch.max()]
    best = last.loc[last.val_err.idxmin()] if last.val_err.notna().any() else None
    print(f"{spec.n_models} models, {spec.epochs} epochs; diverged: {int(last.diverged.sum())}")
    if best is not None:
        print(f"best validation error {best.val_err:.3f} at η={best.lr:g}, λ={best.l2:g} "
              f"(test error {best.test_err:.3f})")
    print(f"table: {result.path}\nprovenance: {result.path.with_suffix('.json')}")


def _info(args: argparse.Namespace) -> None:
    check_out(args.out)  # before anything is printed
    import torch

    from . import __version__, fused
    from .data import data_root, fetch_cifar10
    from .results import list_results, results_dir

    print(f"l2bn {__version__}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        print("GPU: none (sweeps run on the CPU)")
    print(f"CPU kernels of one-thread training: {fused.describe()}")
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


def check_json(path: str | None) -> None:
    """``ParameterError('json: ...')`` unless the report can be written to ``path``, so that a bad
    path is refused before the benchmark runs, not after."""
    if path is None:
        return
    target = Path(path)
    if not path.strip() or target.is_dir():
        raise ParameterError(f"json: {path!r} is not a file name; give the file to write the report to")
    if not target.resolve().parent.is_dir():
        raise ParameterError(f"json: the folder of {path} does not exist")
    writable = os.access(target, os.W_OK) if target.exists() else os.access(target.resolve().parent, os.W_OK)
    if not writable:
        raise ParameterError(f"json: {path} cannot be written (permission denied); give another file")


def _bench(args: argparse.Namespace) -> None:
    import json

    from .bench import run_bench

    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            raise ParameterError(f"{name}: must be a positive integer; got {getattr(args, name)}")
    check_json(args.json)
    report = run_bench(args.profile, tuple(args.ms), args.device, args.steps, args.repeats,
                       optimizer=args.optimizer, precision=args.precision, threads=args.threads)
    cols = ("M", "variant", "model_epochs_per_s", "vs_separate", "tflops", "peak_fraction",
            "conv_share", "conv_ceiling", "peak_mem_mb")
    print("  ".join(f"{c:>18}" for c in cols))
    for row in report["rows"]:
        print("  ".join(f"{row.get(c, float('nan')):>18.4g}" if not isinstance(row.get(c), str)
                        else f"{row[c]:>18}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(report["summary"])


def exit_code(err: BaseException) -> int:
    """The exit status for ``err``: the library's errors carry theirs; any other ``ValueError`` is
    a bad value (2), an ``OSError`` the system's refusal (1)."""
    if isinstance(err, L2bnError):
        return err.exit_code
    return 2 if isinstance(err, ValueError) else 1


def out_of_memory(err: BaseException) -> str | None:
    """A one-line message when ``err`` is the allocator's refusal (torch reports a CPU's as a plain
    ``RuntimeError``, a GPU's as ``torch.OutOfMemoryError``, also a ``RuntimeError``), else None."""
    text = " ".join(str(err).split())
    if not (isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text):
        return None
    size = re.search(r"allocate (\d+ bytes|[\d.]+ [KMGT]iB)", text)
    return (f"out of memory{f' (tried to allocate {size.group(1)})' if size else ''}; the number of "
            "models (--lrs × --l2s), --widths and --batch-size decide the memory: make one smaller")


def _interrupted(args: argparse.Namespace | None, argv: list[str]) -> str:
    if args is None:
        return "\nl2bn: interrupted while starting; nothing was done."
    if args.command == "sweep":
        return ("\nl2bn: interrupted. Finished epochs are checkpointed; to resume, run the same "
                f"command again: l2bn {shlex.join(argv)}")
    return "\nl2bn: interrupted."


def main(argv: list[str] | None = None) -> int:
    """Run ``l2bn`` with ``argv`` (default ``sys.argv[1:]``); return the exit status. Every error
    the library raises on purpose ends in one line on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in ("sweep", "info", "bench")), "")
    args = None
    try:
        args = build_parser().parse_args(join_numbers(argv))  # imports torch: Ctrl-C lands here too
        {"sweep": _sweep, "info": _info, "bench": _bench}[args.command](args)
    except KeyboardInterrupt:
        print(_interrupted(args, argv), file=sys.stderr)
        return 130
    except (L2bnError, ValueError, OSError) as err:
        print(f"l2bn {command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return exit_code(err)
    except (MemoryError, RuntimeError) as err:
        if (message := out_of_memory(err)) is None:
            raise  # a bug: its traceback is the report
        print(f"l2bn {command}: error: {message}", file=sys.stderr)
        return 1
    return 0
