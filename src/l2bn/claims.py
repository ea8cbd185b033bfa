"""The claims registry: every claim of the paper this book tests, with its criterion and its history.

A claim is one record: where in the paper it is made, the statement in words, the predicted value,
the **accepted region** (theory ± tolerance, or a one-sided bound), the function that measures it
(from sweep result tables, or from the theory module's toy computations), whether it is primary,
and the commit at which its criterion was fixed — with a flag for criteria set after results had
been seen. Chapters show their own rows; the verdict chapter lists them all.

The decision rule is equivalence testing (two one-sided tests at 95 %):

* **agrees** when the whole 95 % interval of the measurement lies inside the accepted region;
* **disagrees** when it lies wholly outside;
* **inconclusive** otherwise (the data cannot decide);
* **not measurable** when there is no finite interval or fewer than ``MIN_POINTS`` points.

Intervals come from the real sources of noise: a bootstrap over cells (and over seeds, when a grid
has seed replicates), with every error rate resampled from its binomial distribution on the finite
validation and test sets. Exact computations (identities such as w·∇L = 0) carry their numerical
precision as their interval and say so.

Cells are excluded by rules fixed in advance and computed from the inputs (η, λ, ρ, the schedule),
never from the quantity fitted (``analysis.cells``): diverged, collapsed, not at equilibrium.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from . import analysis
from .rules import ADAMW, MAIN, RULES, SGD, add_new, get_rule
from .spec import grid_name, parse_grid

# ---------------------------------------------------------------------------------------------
# The rule and its constants (fixed in commit FIXED_NOW, before the runs they judge)
# ---------------------------------------------------------------------------------------------

AGREES, DISAGREES, INCONCLUSIVE, NOT_MEASURABLE = "agrees", "disagrees", "inconclusive", "not measurable"
OUTCOMES = (AGREES, DISAGREES, INCONCLUSIVE, NOT_MEASURABLE)
MIN_POINTS = 4
LEVEL = 0.95
N_BOOT = 400  # bootstrap draws: the interval's ends move by well under its width from run to run
D_MIN = analysis.EQUILIBRIUM_D_MIN  # relaxation times (from the inputs) for equilibrium
D_MIN_RANGE = (1.0, 2.0, 3.0, 5.0, 10.0)  # the sensitivity of each fit to that threshold

# Commits at which criteria were fixed (git history of analysis.py and this file).
FIRST_RESULTS = "0680ac1"  # the tolerances ±0.1, ±0.2, ±0.3 and the 3-relaxation-time threshold
AFTER_QUICK = "280b958"  # the secondary rows, the η_eff measure, the normalised-SGD η grid
STEADY_STATE = "60e4f72"  # the §4 claim, registered after its chapter had shown the exponent
FIXED_NOW = "this wave"  # the decision rule, the intervals, the exclusions (after 8101fca's results)


@dataclass(frozen=True)
class Measurement:
    """A measured value with its 95 % interval, the number of points it rests on and its source."""

    value: float
    lo: float
    hi: float
    n: int
    seeds: int = 1
    source: str = "bootstrap over cells"

    @classmethod
    def missing(cls, why: str) -> Measurement:
        return cls(math.nan, math.nan, math.nan, 0, 0, why)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, its criterion and its history."""

    id: str
    where: str  # "§6, Figure 1", "Table 1", "§3"
    statement: str
    theory: float  # the predicted value (NaN for a one-sided claim)
    region: tuple[float, float]  # accepted region: the measurement's interval must lie inside
    measure: Callable[[Mapping[str, Any]], Measurement]
    primary: bool = True
    fixed_at: str = FIRST_RESULTS
    after_results: bool = False  # criterion chosen after results had been seen (exploratory)
    needs: tuple[str, ...] = ()  # update rules whose grids the measurement reads

    def criterion(self) -> str:
        lo, hi = self.region
        if math.isfinite(self.theory) and math.isfinite(lo) and math.isfinite(hi):
            return f"{self.theory:.3g} ± {(hi - lo) / 2:.3g}"
        if math.isfinite(lo) and math.isfinite(hi):
            return f"in [{lo:.3g}, {hi:.3g}]"
        return f"> {lo:.3g}" if math.isfinite(lo) else f"< {hi:.3g}"


def decide(m: Measurement, region: tuple[float, float]) -> str:
    """The verdict of equivalence testing on ``m``'s 95 % interval against ``region``."""
    lo, hi = region
    if m.n < MIN_POINTS or not (math.isfinite(m.lo) and math.isfinite(m.hi)):
        return NOT_MEASURABLE
    if lo <= m.lo and m.hi <= hi:
        return AGREES
    if m.hi < lo or m.lo > hi:
        return DISAGREES
    return INCONCLUSIVE


def around(theory: float, tol: float) -> tuple[float, float]:
    return theory - tol, theory + tol


# ---------------------------------------------------------------------------------------------
# Cells and their exclusions
# ---------------------------------------------------------------------------------------------


def replicates(result: Any) -> list[tuple[pd.DataFrame, Mapping[str, Any]]]:
    """A grid's seed replicates as (table, provenance) pairs: a SweepResult, a pair, or a list."""
    items = result if isinstance(result, list) else [result]
    return [analysis._table_and_meta(r) for r in items]


def cell_frame(result: Any, grid: str, epoch: int | None = None, d_min: float = D_MIN) -> pd.DataFrame:
    """``analysis.cells`` of every seed replicate of a grid (named as in a results mapping:
    ``sgd``, ``sgd@weight``), one row per (seed, cell), with the sizes of the validation and test
    splits for the binomial resampling."""
    rule = parse_grid(grid)[0]
    frames = []
    for s, (table, meta) in enumerate(replicates(result)):
        spec = meta.get("spec", {})
        c = analysis.cells(table, rule, analysis.steps_per_epoch(meta), epoch, d_min, spec.get("hyper"))
        frames.append(c.assign(seed=spec.get("seed", s), n_val=spec.get("n_val", 0),
                               n_test=spec.get("n_test", 0)))
    return pd.concat(frames, ignore_index=True)


_CELLS: dict[tuple[int, str, float, int | None], tuple[Any, pd.DataFrame]] = {}


def grid_cells(results: Mapping[str, Any], rule: str, d_min: float = D_MIN,
               epoch: int | None = None) -> pd.DataFrame:
    """``cell_frame`` of ``results[rule]`` (at the last epoch by default), computed once per grid
    object, threshold and epoch: most of a grid's claims read the same cells. The grid itself is
    kept with its cells, so that its ``id`` cannot be taken by another object while the entry lives."""
    grid = results[rule]
    key = (id(grid), rule, d_min, epoch)
    if key not in _CELLS or _CELLS[key][0] is not grid:
        if len(_CELLS) >= 64:
            _CELLS.clear()
        _CELLS[key] = (grid, cell_frame(grid, rule, epoch, d_min))
    return _CELLS[key][1].copy()


def exclusion_counts(cells: pd.DataFrame) -> dict[str, int]:
    """How many cells each rule excluded (a cell is counted under the first rule that applies)."""
    div = cells["diverged"]
    col = cells["collapsed"] & ~div
    out = ~cells["equilibrium"] & ~div & ~col
    return {"cells": len(cells), "diverged": int(div.sum()), "collapsed": int(col.sum()),
            "not at equilibrium": int(out.sum()), "fitted": int(cells["fitted"].sum())}


# ---------------------------------------------------------------------------------------------
# The bootstrap
# ---------------------------------------------------------------------------------------------


def resample(cells: pd.DataFrame, rng: np.random.Generator, over_cells: bool = True) -> pd.DataFrame:
    """One bootstrap draw: seeds with replacement, then (``over_cells``) cells with replacement
    within each seed, then every error rate redrawn from its binomial distribution on its finite
    split. Statistics of the grid's shape (diagonals, optima per λ) keep every cell in place.
    (Row indices are drawn and taken once: a draw costs a millisecond, not a dozen.)"""
    seed_of = cells["seed"].to_numpy()
    seeds = cells["seed"].unique()
    picked = rng.choice(seeds, size=len(seeds), replace=True)
    rows = []
    for s in picked:
        mine = np.flatnonzero(seed_of == s)
        rows.append(mine[rng.integers(0, len(mine), len(mine))] if over_cells else mine)
    out = cells.iloc[np.concatenate(rows)].reset_index(drop=True)
    for col, n in (("val_err", "n_val"), ("test_err", "n_test")):
        err, size = out[col].to_numpy(float).copy(), out[n].to_numpy()
        ok = np.isfinite(err) & (size > 0)
        err[ok] = rng.binomial(size[ok].astype(int), np.clip(err[ok], 0, 1)) / size[ok]
        out[col] = err
    return out


def bootstrap(cells: pd.DataFrame, stat: Callable[[pd.DataFrame], tuple[float, int]], seed: int = 0,
              n_boot: int = N_BOOT, over_cells: bool = True) -> Measurement:
    """``stat`` on ``cells`` with its percentile 95 % interval over bootstrap draws (``resample``)."""
    value, n = stat(cells)
    if not math.isfinite(value):
        return Measurement(value, math.nan, math.nan, n, int(cells["seed"].nunique()))
    rng = np.random.default_rng(seed)
    draws = np.array([stat(resample(cells, rng, over_cells))[0] for _ in range(n_boot)])
    draws = draws[np.isfinite(draws)]
    if len(draws) < n_boot / 2:  # most draws could not be fitted: no honest interval
        return Measurement(value, math.nan, math.nan, n, int(cells["seed"].nunique()))
    q = (1 - LEVEL) / 2
    lo, hi = np.quantile(draws, [q, 1 - q])
    seeds = int(cells["seed"].nunique())
    over = ["seeds"] * (seeds > 1) + ["cells"] * over_cells
    return Measurement(value, float(lo), float(hi), n, seeds,
                       f"bootstrap{' over ' + ' and '.join(over) if over else ''}, binomial error rates")


# ---------------------------------------------------------------------------------------------
# Measurements on the network's grids
# ---------------------------------------------------------------------------------------------


def _loglog_slope(x: pd.Series, y: pd.Series) -> tuple[float, int]:
    fit = analysis.loglog_fit(x, y)
    return fit.slope, fit.n


def _lambda_exponent(c: pd.DataFrame, column: str) -> tuple[float, int]:
    f = c[c["fitted"]]
    pl = analysis.power_law_fit(f["lr"], f["l2"], f[column])
    return pl.b, pl.n


def norm_exponent(grid: str, away_from: float | None = None) -> Callable[[Mapping[str, Any]], Measurement]:
    """e in ‖W₁‖ ∝ (η/λ)^e over the fitted cells of ``grid`` (a rule's, or ``rule@norm``); with
    ``away_from``, the distance |e − away_from| (a control's departure from the invariant value)."""
    def stat(d: pd.DataFrame) -> tuple[float, int]:
        e, n = _loglog_slope((d.lr / d.l2)[d.fitted], d.layer_norm_0[d.fitted])
        return (e if away_from is None else abs(e - away_from)), n

    return lambda results: bootstrap(grid_cells(results, grid), stat)


def angle_lambda_exponent(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """b in η_eff ∝ η^a λ^b, measured on the angular update per step, over the fitted cells."""
    def measure(results):
        return bootstrap(grid_cells(results, rule), lambda d: _lambda_exponent(d, "angle_0"))
    return measure


ETA_ALONE, LAMBDA_ALONE = (1.0, 0.0), (0.0, 1.0)  # exponents (a, b) of η^a λ^b that group by one input


def _diagonal_gain(exponents: tuple[float, float], rivals: tuple[tuple[float, float], ...] = (
        ETA_ALONE, LAMBDA_ALONE)) -> Callable[[pd.DataFrame], tuple[float, int]]:
    """Adjusted R² of the test error grouped on the diagonals of constant η^a λ^b (``exponents``)
    minus the best of the groupings by ``rivals`` (by default η alone and λ alone)."""
    def stat(d: pd.DataFrame) -> tuple[float, int]:
        ok = ~d["diverged"]
        lr, l2, y = d.lr[ok].to_numpy(), d.l2[ok].to_numpy(), d.test_err[ok].to_numpy()
        if len(y) < MIN_POINTS:
            return math.nan, len(y)
        r2 = [analysis.grouped_r2(y, analysis.diagonal_classes(analysis.log_eta_eff(lr, l2, e)))
              for e in (exponents, *rivals)]
        best_rival = max((v for v in r2[1:] if math.isfinite(v)), default=math.nan)
        return r2[0] - best_rival, len(y)
    return stat


def diagonal_gain(grid: str, printed: bool = False) -> Callable[[Mapping[str, Any]], Measurement]:
    """Adjusted R² of the test error on the diagonals of constant η_eff minus the better of η alone
    and λ alone (Figure 2) on ``grid`` (a rule's, or ``rule@norm``); ``printed``: the diagonals of
    Table 1's η_eff as printed."""
    def measure(results):
        r = get_rule(parse_grid(grid)[0])
        exps = r.printed_eta_eff if printed else r.eta_eff_exponents
        return bootstrap(grid_cells(results, grid), _diagonal_gain(exps), over_cells=False)
    return measure


def _as_table(c: pd.DataFrame) -> pd.DataFrame:
    """A resampled cell frame back in the shape of a one-epoch result table (duplicates averaged;
    a frame without duplicates, one seed's grid, is only sorted: the same table, faster)."""
    if np.unique(c[["lr", "l2"]].to_numpy(), axis=0).shape[0] < len(c):
        t = c.groupby(["lr", "l2"], as_index=False).agg(
            test_err=("test_err", "mean"), val_err=("val_err", "mean"), diverged=("diverged", "all"))
    else:
        t = c[["lr", "l2", "test_err", "val_err", "diverged"]].sort_values(["lr", "l2"], ignore_index=True)
    return t.assign(epoch=1, model=range(len(t)))


def spread_ratio(projected: str, plain: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Figure 3: the test error's spread over λ (below the largest) under normalised SGD, as a
    fraction of the same spread under the unprojected rule on the same grid."""
    def measure(results):
        a, b = grid_cells(results, projected), grid_cells(results, plain)
        a["which"], b["which"] = 0, 1
        both = pd.concat([a, b], ignore_index=True)

        def stat(d):
            sa, _ = analysis.lambda_sensitivity(_as_table(d[d.which == 0]))
            sb, _ = analysis.lambda_sensitivity(_as_table(d[d.which == 1]))
            ok = sb["spread_mean"] > 0
            return (sa["spread_mean"] / sb["spread_mean"] if ok else math.nan), int(len(d) / 2)
        return bootstrap(both, stat, over_cells=False)
    return measure


def largest_lambda_excess(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Figure 3: how much the largest λ raises the test error (percentage points) above the mean of
    the smaller λ, with the binomial noise of the test set in its interval."""
    def measure(results):
        def stat(d):
            s, per = analysis.lambda_sensitivity(_as_table(d))
            return 100 * s["excess_mean"], int(per["excess"].notna().sum() * d["l2"].nunique())
        return bootstrap(grid_cells(results, rule), stat, over_cells=False)
    return measure


def best_lr_slope(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Figure 4: the slope of log η* against log λ, η* chosen on the validation split, interior
    optima only; validation errors resampled binomially."""
    def measure(results):
        def stat(d):
            fit, _, _ = analysis.best_lr_slope(_as_table(d), n_boot=0)
            return fit.slope, fit.n
        return bootstrap(grid_cells(results, rule), stat, over_cells=False)
    return measure


# ---------------------------------------------------------------------------------------------
# Measurements of the theory chapters (§2–§5): exact computations and the toy unit
# ---------------------------------------------------------------------------------------------

THEORY = "theory"  # the key of the theory chapters' computations in a results mapping


def without_error_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as cells for ``bootstrap`` when they carry no error rates to redraw: every row
    fitted, one seed unless the frame has its own ``seed`` column, no validation or test split."""
    seed = {} if "seed" in frame else {"seed": 0}
    return frame.assign(**seed, fitted=True, n_val=0, n_test=0, val_err=math.nan, test_err=math.nan)


def exact(value: float, n: int, precision: float = 1e-9) -> Measurement:
    """An exact computation (float64, no sampling noise): its interval is its numerical precision."""
    return Measurement(value, value - precision, value + precision, n, 0,
                       "exact computation (float64); interval = numerical precision")


def computed(key: str, compute: Callable[[int], float], n: int,
             precision: float = 1e-9) -> Callable[[Mapping[str, Any]], Measurement]:
    """An exact check of a theory chapter: the value the chapter computed, handed over as
    ``results[THEORY][key]``, or else computed here at ``results[THEORY]['seed']`` (default 0)."""
    def measure(results):
        ctx = results[THEORY]
        value = ctx[key] if key in ctx else compute(ctx.get("seed", 0))
        return exact(float(value), n, precision)
    return measure


def _output_change(norm: str, per: str) -> Callable[[int], float]:
    """§2: max |y(αw) − y(w)| over a batch's logits, conv weights scaled per unit or per layer."""
    from . import theory
    return lambda seed: theory.output_change(norm, per, seed=seed)


def _l2_rescaling_gap(seed: int) -> float:
    """§2: the largest relative gap between L_λ(αw) and L_{λα²}(w) on the BN network."""
    from . import theory
    return float(theory.l2_rescaling_gap("batch", [0.1, 0.3, 3.0, 10.0], lam=1e-3, seed=seed).rel_gap.max())


def _flat_ray(seed: int) -> float:
    """§2: the relative spread of the data loss L(αw) along the ray α ∈ [0.1, 10]."""
    from . import theory
    data = theory.loss_along_scale("batch", np.logspace(-1, 1, 9), [1e-3], seed=seed).data_loss
    return float((data.max() - data.min()) / data.mean())


def _scaling(where: str, column: str) -> Callable[[int], float]:
    """§3: the log–log slope of ‖∇L(αw)‖ (or of ‖∇²L(αw)v‖) against α, on the BN network or the toy."""
    def compute(seed):
        from . import theory
        if where == "toy":
            toy = theory.make_toy(seed=seed)
            loss, w = (lambda v: theory.toy_loss(v, toy)), theory.toy_w0(toy, seed=seed)
            alphas = np.logspace(-2, 2, 9)
        else:
            (loss, w, _), alphas = theory.net_loss_fn("batch", seed=seed), np.logspace(-1, 2, 7)
        tab = theory.scaling_table(loss, w, alphas, seed=seed)
        return theory.loglog_slope(tab["alpha"], tab[column])
    return compute


def _orthogonality(where: str) -> Callable[[int], float]:
    """§3: the largest |cos| between a unit's weights and its gradient (w·∇L = 0)."""
    def compute(seed):
        from . import theory
        if where == "toy":
            toy = theory.make_toy(seed=seed)
            return theory.orthogonality(lambda v: theory.toy_loss(v, toy), theory.toy_w0(toy, seed=seed),
                                        [(0, toy.d)])
        loss, w, units = theory.net_loss_fn("batch", seed=seed)
        return theory.orthogonality(loss, w, units)
    return compute


def _no_l2(what: str) -> Callable[[int], float]:
    """§3 without L2 (SGD on the toy unit, η = 1, 3000 steps): the relative error of the step
    identity ‖w_{t+1}‖² = ‖w_t‖² + η²‖∇L‖², the smallest relative rise of ‖w‖ in a step, or the
    factor by which η_eff falls over the run."""
    def compute(seed):
        from . import theory
        g = theory.no_l2_growth(theory.make_toy(seed=seed), 1.0, 3000, seed=seed)
        if what == "identity":
            return g["identity_err"]
        return float(np.min(np.diff(g["norm"]) / g["norm"][:-1])) if what == "rise" else float(
            g["eta_eff"][0] / g["eta_eff"][-1])
    return compute


def _rescaled_gap(seed: int) -> float:
    """§3: the largest relative gap between the run from αw₀ with (ηα², λ/α²) and α × the run
    from w₀ with (η, λ): SGD on the toy unit, α = 0.1 and 10."""
    from . import theory
    toy = theory.make_toy(seed=seed)
    return max(theory.rescaled_gap(SGD.name, toy, 0.1, 1e-3, a, steps=500, seed=seed) for a in (0.1, 10.0))


def _closed_form_error(seed: int) -> float:
    """§4: the largest relative error of the closed-form steady-state ‖w‖ against the simulation
    of the noise model (the 4 × 3 grid of chapter 03, 64 units, 3000 steps)."""
    from . import theory
    lrs, l2s = theory.product_grid([0.03, 0.1, 0.3, 1.0], [0.003, 0.01, 0.03])
    return float(theory.noise_model_table(lrs, l2s, 3000, units=64, seed=seed).rel_err.abs().max())


def settled_angle_ratio(results: Mapping[str, Any]) -> Measurement:
    """Chapter 03's SGD run on the network: the mean angle per step over θ* = arccos(1 − 2ηλ)
    (Wan et al., 2021) in the last three epochs before η drops, for the models with at least five
    e-folds of decay by then. A range over those models, not a confidence interval."""
    r = results["settling"]["angle_ratio"]
    return Measurement(float(r.median()), float(r.min()), float(r.max()), len(r), 1,
                       "range over the settled models (one seed)")


def steady_state_exponent(results: Mapping[str, Any]) -> Measurement:
    """§4: the exponent e of the simulated steady-state ‖w‖ against η/λ under the paper's noise
    model (SGD, 64 units per cell, 3000 steps, the 4 × 3 grid of chapter 03), with a bootstrap
    over the cells; the simulation's own noise enters through the units' mean."""
    from . import theory
    lrs, l2s = theory.product_grid([0.03, 0.1, 0.3, 1.0], [0.003, 0.01, 0.03])
    sim = theory.noise_model_table(lrs, l2s, 3000, units=64)
    c = without_error_rates(pd.DataFrame({"x": sim["lr"] / sim["l2"], "y": sim["simulated"]}))
    return bootstrap(c, lambda d: _loglog_slope(d["x"], d["y"]))


def toy_exponent(rule: str, which: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Table 1 on the toy unit: the separate exponent of η (``which='eta'``) or of λ in the
    equilibrium norm, over the rule's toy grid, with a bootstrap over its cells. (The exponent of
    η/λ alone is 1/4 by the scale symmetry on any grid symmetric in log η and log λ: an identity,
    not a measurement; the separate exponents are what the run measures.)"""
    def measure(results):
        run = results[THEORY]["toy_runs"][rule]
        c = without_error_rates(pd.DataFrame({"lr": run.lr, "l2": run.l2, "norm": run.equilibrium_norm()}))

        def stat(d):
            pl = analysis.power_law_fit(d["lr"], d["l2"], d["norm"])
            return (pl.a if which == "eta" else -pl.b), pl.n
        return bootstrap(c, stat)
    return measure


# ---------------------------------------------------------------------------------------------
# After the paper (chapter 09): the later literature's prefactors
# ---------------------------------------------------------------------------------------------

AFTER_PAPER = "55e1ea0"  # committed before any grid with ‖g̃‖² and the squared angle had run


def rotation_cells(results: Mapping[str, Any], grid: str, per: str = "unit") -> pd.DataFrame:
    """``rotational.network_rotation`` of ``grid`` (a rule's, or ``rule@norm``) at the end of its
    constant-η phase, per unit or (``per='layer'``) per whole layer."""
    from . import rotational
    table, meta = replicates(results[grid])[0]
    cells = grid_cells(results, grid, epoch=rotational.constant_lr_epoch(table))
    return rotational.network_rotation(cells, parse_grid(grid)[0], meta["spec"]["widths"], per)


def rotation_ratio(grid: str, column: str, per: str = "unit") -> Callable[[Mapping[str, Any]], Measurement]:
    """The geometric mean over the cells at equilibrium (end of the constant-η phase) and the four
    conv layers of measured/predicted ``column`` (``angle_ratio`` or ``norm_ratio``), per unit or
    per whole layer, with a bootstrap over cells and seeds (a cell's four layers are resampled
    together)."""
    def measure(results):
        rot = rotation_cells(results, grid, per)
        by_cell = rot.groupby(["seed", "lr", "l2"], as_index=False)[column].agg(geometric_mean)
        c = without_error_rates(by_cell)
        return bootstrap(c, lambda d: (geometric_mean(d[column]), len(d)))
    return measure


def geometric_mean(values: pd.Series) -> float:
    """exp(mean(log x)): the average of ratios, which treats ×2 and ÷2 alike."""
    return float(np.exp(np.log(values).mean()))


def rotation_by_layer(rot: pd.DataFrame, layers: int = 4) -> pd.DataFrame:
    """The geometric means of ``angle_ratio`` and ``norm_ratio`` of ``rotation_cells`` by layer,
    indexed "layer 1" … (NaN for a layer without cells at equilibrium)."""
    means = rot.groupby("layer")[["angle_ratio", "norm_ratio"]].agg(geometric_mean).reindex(range(layers))
    return means.rename(index=lambda i: f"layer {i + 1}")


def best_lr_relaxation(results: Mapping[str, Any], grid: str) -> pd.DataFrame:
    """Figure 4's optimum of each λ on ``grid`` (``analysis.best_lr``: the best η on the grid, the
    refined η*, whether it lies on the grid's edge) with the relaxation times its best cell has lived
    through by the end of training (from the inputs, as the exclusions count them)."""
    cells = grid_cells(results, grid)
    best = analysis.best_lr(replicates(results[grid])[0][0])
    best["relaxation"] = [cells.relaxation[np.isclose(cells.lr, lr) & np.isclose(cells.l2, l2)].max()
                          for lr, l2 in zip(best.lr_grid, best.l2, strict=True)]
    return best


def best_lr_settled(results: Mapping[str, Any], grids: Sequence[str]) -> pd.DataFrame:
    """Figure 4's slope per grid, beside how many of its optima are interior, how many of those
    best cells lived through ``D_MIN`` relaxation times, and the slope refitted over those alone
    (a diagnostic of the ``best-lr`` rows: is a departure from theory a departure at equilibrium?)."""
    rows = {}
    for grid in grids:
        best = best_lr_relaxation(results, grid)
        inner = best[~best["edge"]]
        settled = inner[inner["relaxation"] >= D_MIN]
        rows[grid] = {"theory": get_rule(parse_grid(grid)[0]).best_lr_slope, "λ values": len(best),
                      "interior": len(inner), "interior and settled": len(settled),
                      "slope, interior": analysis.loglog_fit(inner.l2, inner.lr_star).slope,
                      "slope, settled only": analysis.loglog_fit(settled.l2, settled.lr_star).slope}
    return pd.DataFrame(rows).T


def intrinsic_lr_gain(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Li, Lyu & Arora 2020: adjusted R² of the test error on the diagonals of constant η·λ minus the
    better of η/λ and η alone, with the noise of the error rates resampled."""
    def measure(results):
        stat = _diagonal_gain((1.0, 1.0), rivals=((1.0, -1.0), ETA_ALONE))
        return bootstrap(grid_cells(results, rule), stat, over_cells=False)
    return measure


TOY_ROTATION = {"lrs": (0.1, 0.1, 0.3, 0.3), "l2s": (1e-3, 3e-3, 1e-3, 3e-3), "steps": 8000}
TOY_ROTATION_ADAMW = {"lrs": (0.01, 0.01, 0.003, 0.003), "l2s": (0.03, 0.1, 0.03, 0.1), "steps": 8000}


def toy_rotation_ratio(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """The toy unit's RMS angle per step over ``rotational.predicted_angle``, at four (η, λ) with
    ηλ ≤ 1e-3 where the small-step form should hold, with a bootstrap over the four runs."""
    def measure(results):
        from . import rotational
        grid = TOY_ROTATION_ADAMW if get_rule(rule).rotation == "kosson" else TOY_ROTATION
        seed = results[THEORY].get("seed", 0)
        out = rotational.toy_rotation(rule, list(grid["lrs"]), list(grid["l2s"]), grid["steps"], seed=seed)
        c = without_error_rates(pd.DataFrame({"ratio": out["angle_ratio"]}))
        return bootstrap(c, lambda d: (geometric_mean(d["ratio"]), len(d)))
    return measure


def _exponential_lr_angle(seed: int) -> float:
    """Li & Arora 2020 on the toy unit: the largest angle between SGD with L2 (η = 0.1, λ = 0.01)
    and SGD without it at the exponentially growing rate, over 2000 steps."""
    from . import rotational
    return rotational.exponential_lr_equivalence(0.1, 0.01, 2000, seed=seed)["max_angle"]


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

CLAIMS: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    """Add ``claim`` to the registry (ids are unique)."""
    return add_new(CLAIMS, claim.id, claim, "claims")


def _register_rule_claims(name: str) -> None:
    r = RULES[name]
    if not (r.trainable and r.in_paper) or r.projection is not None:
        return
    fig = "§6, Figure 1" if "1" in r.figures else "§5, Table 1"
    register(Claim(f"norm-exponent/{name}", fig, f"{r.label}: ‖W₁‖ ∝ (η/λ)^e at equilibrium",
                   r.norm_exponent, around(r.norm_exponent, 0.1), norm_exponent(name), needs=(name,)))
    b = r.eta_eff_exponents[1]
    register(Claim(f"eta-eff-exponent/{name}", "§5, Table 1",
                   f"{r.label}: η_eff ∝ η^a λ^b, exponent b of λ, from the angular update per step",
                   b, around(b, 0.2), angle_lambda_exponent(name), fixed_at=AFTER_QUICK,
                   after_results=True, needs=(name,)))
    if "2" in r.figures:
        register(Claim(f"diagonal/{name}", "§6, Figure 2",
                       f"{r.label}: the test error follows the diagonals of constant η_eff (derived "
                       "form): adjusted R² above the better of η alone and λ alone",
                       math.nan, (0.0, math.inf), diagonal_gain(name), needs=(name,)))
        register(Claim(f"diagonal-printed/{name}", "§5, Table 1 as printed",
                       f"{r.label}: the same with η_eff as Table 1 prints it (λ in the denominator)",
                       math.nan, (0.0, math.inf), diagonal_gain(name, printed=True), primary=False,
                       needs=(name,)))
    if "4" in r.figures:
        register(Claim(f"best-lr/{name}", "§6, Figure 4", f"{r.label}: η* ∝ λ^s on the validation split",
                       r.best_lr_slope, around(r.best_lr_slope, 0.3), best_lr_slope(name), needs=(name,)))


def _register_projection_claims(name: str) -> None:
    r = RULES[name]
    plain = next(n for n, o in RULES.items() if o.step is r.step and o.projection is None)
    register(Claim(f"lambda-spread/{name}", "§6, Figure 3",
                   f"{r.label}: λ barely matters below the largest λ: test-error spread over λ at "
                   f"most half of {RULES[plain].label}'s",
                   math.nan, (0.0, 0.5), spread_ratio(name, plain), needs=(name, plain)))
    register(Claim(f"largest-lambda/{name}", "§6, Figure 3",
                   f"{r.label}: the largest λ raises the test error (pp above the smaller λ)",
                   math.nan, (0.0, math.inf), largest_lambda_excess(name), fixed_at=AFTER_QUICK,
                   after_results=True, needs=(name,)))


INVARIANT = {("batch", "unit"), ("batch", "layer"), ("weight", "unit"), ("weight", "layer"),
             ("layer", "layer")}


def _register_theory_claims() -> None:
    # The exact checks of chapters 01–03: their thresholds are numerical precision (float64 and BN's
    # ε = 1e-5), written with the code that first computed them.
    for norm in ("batch", "weight", "layer", "none"):
        for per in ("unit", "layer"):
            name = {"batch": "batch", "weight": "weight", "layer": "layer", "none": "no"}[norm]
            if (norm, per) in INVARIANT:
                register(Claim(f"invariance/{norm}-{per}", "§2", f"{name} normalisation: the output "
                               f"ignores the scale of the weights (one α per {per})", 0.0, (-1e-4, 1e-4),
                               computed(f"dy_{norm}_{per}", _output_change(norm, per), 10), needs=(THEORY,)))
            else:
                register(Claim(f"invariance/{norm}-{per}", "§2", f"control: with {name} normalisation and "
                               f"one α per {per} the output changes (max |Δy| above 0.01)", math.nan,
                               (1e-2, math.inf), computed(f"dy_{norm}_{per}", _output_change(norm, per), 10),
                               primary=False, needs=(THEORY,)))
    register(Claim("l2-rescaling", "§2", "L_λ(αw) = L_{λα²}(w) on the BN network (relative gap)", 0.0,
                   (-1e-4, 1e-4), computed("l2_gap", _l2_rescaling_gap, 4), needs=(THEORY,)))
    register(Claim("flat-ray", "§2", "the data loss is flat along the ray αw (relative spread)", 0.0,
                   (-1e-4, 1e-4), computed("flat_spread", _flat_ray, 9), needs=(THEORY,)))
    for where, label in (("network", "the BN network"), ("toy", "the toy unit")):
        suffix = "" if where == "network" else "/toy"
        register(Claim(f"gradient-scaling{suffix}", "§3", f"‖∇L(αw)‖ ∝ 1/α on {label}", -1.0,
                       around(-1.0, 0.01), needs=(THEORY,),
                       measure=computed(f"grad_slope_{where}", _scaling(where, "grad_norm"), 7, 1e-6)))
        register(Claim(f"hessian-scaling{suffix}", "§3", f"‖∇²L(αw)v‖ ∝ 1/α² on {label}", -2.0,
                       around(-2.0, 0.01), needs=(THEORY,),
                       measure=computed(f"hvp_slope_{where}", _scaling(where, "hvp_norm"), 7, 1e-6)))
    register(Claim("orthogonality/toy", "§3", "w · ∇L(w) = 0: largest |cos| on the toy unit", 0.0,
                   (-1e-12, 1e-12), computed("cos_toy", _orthogonality("toy"), 4096, 1e-15), needs=(THEORY,)))
    register(Claim("orthogonality/network", "§3", "w · ∇L(w) = 0 per unit: largest |cos| on the BN network",
                   0.0, (-1e-4, 1e-4), computed("cos_net", _orthogonality("network"), 10), needs=(THEORY,)))
    register(Claim("no-l2/identity", "§3", "without L2, ‖w_{t+1}‖² = ‖w_t‖² + η²‖∇L‖² (relative error)",
                   0.0, (-1e-12, 1e-12), computed("identity_err", _no_l2("identity"), 3000, 1e-15),
                   needs=(THEORY,)))
    register(Claim("no-l2/growth", "§3", "without L2, ‖w‖ rises at every step (smallest relative rise)",
                   math.nan, (0.0, math.inf), computed("min_rise", _no_l2("rise"), 3000, 0.0),
                   needs=(THEORY,)))
    register(Claim("no-l2/annealing", "§3", "without L2, η_eff falls by more than 10× over the run",
                   math.nan, (10.0, math.inf), computed("eff_drop", _no_l2("drop"), 3000), needs=(THEORY,)))
    register(Claim("rescaling-symmetry", "§3", "the run from αw₀ with (ηα², λ/α²) is α × the run from w₀ "
                   "(largest relative gap)", 0.0, (-1e-10, 1e-10),
                   computed("rescale_gap", _rescaled_gap, 500, 1e-15), needs=(THEORY,)))
    register(Claim("steady-state", "§4", "SGD under the noise model: steady-state ‖w‖ ∝ (η/λ)^{1/4}",
                   0.25, around(0.25, 0.01), steady_state_exponent, fixed_at=STEADY_STATE,
                   after_results=True, needs=(THEORY,)))
    register(Claim("steady-state-formula", "§4", "the closed-form steady-state ‖w‖ matches the simulated "
                   "noise model (largest relative error)", 0.0, (-0.05, 0.05),
                   computed("max_err", _closed_form_error, 12, 1e-6), needs=(THEORY,)))
    register(Claim("settled-angle/sgd", "§4 on the network (Wan et al., 2021)", "SGD: the settled units' "
                   "mean angle per step is 0.6–1.05 of θ* = arccos(1 − 2ηλ)", math.nan, (0.6, 1.05),
                   settled_angle_ratio, primary=False, fixed_at=FIRST_RESULTS, after_results=True,
                   needs=("settling",)))
    for name, r in RULES.items():
        if r.trainable and r.projection is None and r.steady_state:
            e = r.norm_exponent
            for which in ("eta", "lambda"):
                register(Claim(f"toy-exponent-{which}/{name}", "§5, Table 1 (toy unit)",
                               f"{r.label}: ‖w‖ ∝ {'η^e' if which == 'eta' else 'λ^(−e)'} with e = "
                               f"{e:.3g} at equilibrium, on the toy unit", e, around(e, 0.03),
                               toy_exponent(name, which), fixed_at=FIRST_RESULTS, needs=(THEORY,),
                               primary=r.in_paper))


def _register_after_paper_claims() -> None:
    wan = "Wan et al. 2021"
    register(Claim(f"rotation-angle/{SGD.name}", wan, "SGD on the network: the RMS angle per step at "
                   "equilibrium is √(2η·wd) (wd = 2λ); measured/predicted", 1.0, around(1.0, 0.2),
                   rotation_ratio(SGD.name, "angle_ratio"), primary=False, fixed_at=AFTER_PAPER,
                   needs=(SGD.name,)))
    register(Claim(f"rotation-norm/{SGD.name}", wan, "SGD on the network: ‖w‖⁴ = η·E‖g̃‖²/(2·wd) at "
                   "equilibrium, with the measured ‖g̃‖²; measured/predicted", 1.0, around(1.0, 0.2),
                   rotation_ratio(SGD.name, "norm_ratio"), primary=False, fixed_at=AFTER_PAPER,
                   needs=(SGD.name,)))
    register(Claim(f"intrinsic-lr/{MAIN.name}", "Li, Lyu & Arora 2020", "Nesterov: the test error "
                   "follows η·λ: adjusted R² above the better of η/λ and η alone", math.nan, (0.0, math.inf),
                   intrinsic_lr_gain(MAIN.name), primary=False, fixed_at=AFTER_PAPER, needs=(MAIN.name,)))
    for name, r in RULES.items():
        if r.rotation is not None:
            src = wan if r.rotation == "wan" else "Kosson et al. 2024"
            tol = 0.1 if r.rotation == "kosson" else 0.05
            register(Claim(f"toy-rotation/{name}", f"{src} (toy unit)", f"{r.label}: RMS angle per step at "
                           "equilibrium over the prediction, small ηλ", 1.0, around(1.0, tol),
                           toy_rotation_ratio(name), primary=False, fixed_at=AFTER_PAPER,
                           after_results=True, needs=(THEORY,)))
    register(Claim("exponential-lr", "Li & Arora 2020 (toy unit)", "SGD with L2 is SGD without it at the "
                   "rate η(1 − 2ηλ)^−(2t+1): largest angle between the runs", 0.0, (-1e-9, 1e-9),
                   computed("exp_lr_angle", _exponential_lr_angle, 2000, 1e-15), primary=False,
                   fixed_at=AFTER_PAPER, needs=(THEORY,)))


# AdamW and the networks normalised otherwise (chapter 09, second part): every criterion below was
# committed in AFTER_PAPER_NETWORK, before any AdamW, weight-, layer- or un-normalised grid had run.
AFTER_PAPER_NETWORK = "1fe5053"
AFTER_PAPER_LAYER_ANGLE = "30be7ac"  # before any grid recorded the whole layer's angle
INVARIANT_NORMS = ("weight", "layer")  # §2 names them; the paper's experiments train neither
CONTROL_NORM = "none"  # the control: no normalisation, no scale invariance, no reason for Table 1


def _register_network_after_paper_claims() -> None:
    w = ADAMW
    kosson = "Kosson et al. 2024"
    register(Claim(f"norm-exponent/{w.name}", "Loshchilov & Hutter 2019; " + kosson, f"{w.label} (decoupled "
                   f"decay): ‖W₁‖ ∝ (η/λ)^e with e = {w.norm_exponent:.3g} at equilibrium", w.norm_exponent,
                   around(w.norm_exponent, 0.1), norm_exponent(w.name), primary=False,
                   fixed_at=AFTER_PAPER_NETWORK, needs=(w.name,)))
    register(Claim(f"best-lr/{w.name}", kosson, f"{w.label}: η* ∝ λ^s with s = {w.best_lr_slope:.3g} "
                   "on the validation split (η* keeps η_eff ∝ √(ηλ), the angular update, fixed)",
                   w.best_lr_slope, around(w.best_lr_slope, 0.3), best_lr_slope(w.name), primary=False,
                   fixed_at=AFTER_PAPER_NETWORK, needs=(w.name,)))
    for column, what in (("angle_ratio", "RMS angle per step √(2η·wd(1 − β₁)/(1 + β₁))"),
                         ("norm_ratio", "unit norm √(η·C/(2·wd))")):
        register(Claim(f"rotation-{column.split('_')[0]}/{w.name}", kosson, f"{w.label} on the network: "
                       f"the {what} at equilibrium; measured/predicted", 1.0, around(1.0, 0.2),
                       rotation_ratio(w.name, column), primary=False, fixed_at=AFTER_PAPER_NETWORK,
                       needs=(w.name,)))
    for norm in INVARIANT_NORMS:
        grid = grid_name(SGD.name, norm)
        register(Claim(f"norm-exponent/{grid}", f"§2 with {norm} normalisation", f"SGD, {norm}-normalised "
                       f"network: ‖W₁‖ ∝ (η/λ)^e with e = {SGD.norm_exponent:.3g} (whole-layer norm)",
                       SGD.norm_exponent, around(SGD.norm_exponent, 0.1), norm_exponent(grid),
                       primary=False, fixed_at=AFTER_PAPER_NETWORK, needs=(grid,)))
        register(Claim(f"diagonal/{grid}", f"§2 with {norm} normalisation", f"SGD, {norm}-normalised "
                       "network: the test error follows the diagonals of constant η_eff: adjusted R² "
                       "above the better of η alone and λ alone", math.nan, (0.0, math.inf),
                       diagonal_gain(grid), primary=False, fixed_at=AFTER_PAPER_NETWORK, needs=(grid,)))
    grid = grid_name(SGD.name, "layer")
    register(Claim(f"rotation-layer-angle/{grid}", "Wan et al. 2021, per layer", "SGD, layer-normalised "
                   "network: the RMS angle per step of each whole layer's weights (the scale-invariant "
                   "vector) at equilibrium is √(2η·wd); measured/predicted", 1.0, around(1.0, 0.2),
                   rotation_ratio(grid, "angle_ratio", per="layer"), primary=False,
                   fixed_at=AFTER_PAPER_LAYER_ANGLE, needs=(grid,)))
    grid = grid_name(SGD.name, CONTROL_NORM)
    register(Claim(f"control-exponent/{grid}", "control: no normalisation", "SGD without normalisation: "
                   f"nothing makes the norm scale as (η/λ)^{SGD.norm_exponent:.3g}: |e − "
                   f"{SGD.norm_exponent:.3g}| above 0.1", math.nan, (0.1, math.inf),
                   norm_exponent(grid, away_from=SGD.norm_exponent), primary=False,
                   fixed_at=AFTER_PAPER_NETWORK, needs=(grid,)))


_register_theory_claims()
_register_after_paper_claims()
_register_network_after_paper_claims()
for _name in list(RULES):
    _register_rule_claims(_name)
    if RULES[_name].projection is not None and "3" in RULES[_name].figures:
        _register_projection_claims(_name)


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------


def judge(claim: Claim, results: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the verdict: the claim, its measurement with interval, and the outcome."""
    missing = [n for n in claim.needs if n not in results]
    m = Measurement.missing(f"no grid for {', '.join(missing)}") if missing else claim.measure(results)
    return {"id": claim.id, "where": claim.where, "claim": claim.statement, "theory": claim.theory,
            "criterion": claim.criterion(), "measured": m.value, "lo": m.lo, "hi": m.hi, "n": m.n,
            "seeds": m.seeds, "source": m.source, "verdict": decide(m, claim.region),
            "primary": claim.primary, "fixed at": claim.fixed_at,
            "history": "set after results were seen" if claim.after_results else "fixed before the runs"}


def verdict(results: Mapping[str, Any], ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The verdict on every registered claim whose grids are in ``results`` (or on ``ids``)."""
    chosen = [CLAIMS[i] for i in ids] if ids is not None else [
        c for c in CLAIMS.values() if all(n in results for n in c.needs)]
    return pd.DataFrame([judge(c, results) for c in chosen])


def counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows of a verdict table have each outcome."""
    return {o: int((table["verdict"] == o).sum()) for o in OUTCOMES}


def sensitivity(results: Mapping[str, Any], rule: str, d_mins: Sequence[float] = D_MIN_RANGE) -> pd.DataFrame:
    """The weight-norm exponent of ``rule`` for each equilibrium threshold in ``d_mins``."""
    claim = CLAIMS[f"norm-exponent/{rule}"]
    rows = []
    for d in d_mins:
        c = grid_cells(results, rule, d)
        m = bootstrap(c, lambda x: _loglog_slope((x.lr / x.l2)[x.fitted], x.layer_norm_0[x.fitted]),
                      n_boot=N_BOOT // 2)
        rows.append({"d_min": d, "e": m.value, "lo": m.lo, "hi": m.hi, "n": m.n,
                     "verdict": decide(m, claim.region)})
    return pd.DataFrame(rows)


def with_region(claim_id: str, region: tuple[float, float]) -> Claim:
    """A copy of a registered claim with another accepted region (for exercises; never registered)."""
    return replace(CLAIMS[claim_id], region=region)


def interval_text(row: Mapping[str, Any]) -> str:
    """A verdict row's measurement as prose shows it: ``0.47 [0.41, 0.52]``, ``0.47 (no interval)``
    or an em dash when nothing was measured."""
    if not math.isfinite(row["measured"]):
        return "—"
    if not (math.isfinite(row["lo"]) and math.isfinite(row["hi"])):
        return f"{row['measured']:.3g} (no interval)"
    return f"{row['measured']:.3g} [{row['lo']:.3g}, {row['hi']:.3g}]"


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A verdict table as a chapter shows it: the claim, its criterion, the measurement with its
    95 % interval, the points and seeds it rests on, the verdict and the criterion's history."""
    out = pd.DataFrame({
        "where": table["where"], "claim": table["claim"], "accepted": table["criterion"],
        "measured [95 % interval]": [interval_text(r) for _, r in table.iterrows()],
        "cells × seeds": [f"{n} × {s}" for n, s in zip(table["n"], table["seeds"], strict=True)],
        "verdict": table["verdict"] + np.where(table["primary"], "", " (secondary)"),
        "criterion fixed": [f"{f}; {h}" for f, h in zip(table["fixed at"], table["history"], strict=True)],
    })
    return out.set_index(["where", "claim"])


def chapter_rows(results: Mapping[str, Any], prefix: str | tuple[str, ...]) -> pd.DataFrame:
    """The verdict rows of the claims whose id starts with ``prefix`` (a chapter's own; a tuple
    of prefixes is allowed) and whose grids are in ``results``."""
    ids = [i for i, c in CLAIMS.items() if i.startswith(prefix) and all(n in results for n in c.needs)]
    return verdict(results, ids)


VERDICT_WORDS = {AGREES: "within", DISAGREES: "outside", INCONCLUSIVE: "too uncertain to judge against",
                 NOT_MEASURABLE: "not measurable against"}
