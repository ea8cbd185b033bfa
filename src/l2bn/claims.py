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
from .rules import RULES, add_new, get_rule

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


def cell_frame(result: Any, rule: str, epoch: int | None = None, d_min: float = D_MIN) -> pd.DataFrame:
    """``analysis.cells`` of every seed replicate of a grid, one row per (seed, cell), with the
    sizes of the validation and test splits for the binomial resampling."""
    frames = []
    for s, (table, meta) in enumerate(replicates(result)):
        spec = meta.get("spec", {})
        c = analysis.cells(table, rule, analysis.steps_per_epoch(meta), epoch, d_min, spec.get("hyper"))
        frames.append(c.assign(seed=spec.get("seed", s), n_val=spec.get("n_val", 0),
                               n_test=spec.get("n_test", 0)))
    return pd.concat(frames, ignore_index=True)


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
    split. Statistics of the grid's shape (diagonals, optima per λ) keep every cell in place."""
    seeds = cells["seed"].unique()
    picked = rng.choice(seeds, size=len(seeds), replace=True)
    parts = []
    for s in picked:
        c = cells[cells["seed"] == s]
        parts.append(c.iloc[rng.integers(0, len(c), len(c))] if over_cells else c)
    out = pd.concat(parts, ignore_index=True)
    for col, n in (("val_err", "n_val"), ("test_err", "n_test")):
        ok = np.isfinite(out[col]) & (out[n] > 0)
        k = rng.binomial(out.loc[ok, n].astype(int), out.loc[ok, col].clip(0, 1))
        out.loc[ok, col] = k / out.loc[ok, n]
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


def norm_exponent(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """e in ‖W₁‖ ∝ (η/λ)^e over the fitted cells of ``rule``'s grid."""
    def measure(results):
        c = cell_frame(results[rule], rule)
        return bootstrap(c, lambda d: _loglog_slope((d.lr / d.l2)[d.fitted], d.layer_norm_0[d.fitted]))
    return measure


def angle_lambda_exponent(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """b in η_eff ∝ η^a λ^b, measured on the angular update per step, over the fitted cells."""
    def measure(results):
        return bootstrap(cell_frame(results[rule], rule), lambda d: _lambda_exponent(d, "angle_0"))
    return measure


def _diagonal_gain(rule: str, exponents: tuple[float, float]) -> Callable[[pd.DataFrame], tuple[float, int]]:
    def stat(d: pd.DataFrame) -> tuple[float, int]:
        ok = ~d["diverged"]
        lr, l2, y = d.lr[ok].to_numpy(), d.l2[ok].to_numpy(), d.test_err[ok].to_numpy()
        if len(y) < MIN_POINTS:
            return math.nan, len(y)
        keys = analysis.log_eta_eff(lr, l2, exponents)
        r2 = [analysis.grouped_r2(y, g) for g in (analysis.diagonal_classes(keys),
                                                  np.log10(lr).round(6), np.log10(l2).round(6))]
        single = max(v for v in r2[1:] if math.isfinite(v)) if any(map(math.isfinite, r2[1:])) else math.nan
        return r2[0] - single, len(y)
    return stat


def diagonal_gain(rule: str, printed: bool = False) -> Callable[[Mapping[str, Any]], Measurement]:
    """Adjusted R² of the test error on the diagonals of constant η_eff minus the better of η alone
    and λ alone (Figure 2); ``printed``: the diagonals of Table 1's η_eff as printed."""
    def measure(results):
        r = get_rule(rule)
        exps = r.printed_eta_eff if printed else r.eta_eff_exponents
        return bootstrap(cell_frame(results[rule], rule), _diagonal_gain(rule, exps), over_cells=False)
    return measure


def _as_table(c: pd.DataFrame) -> pd.DataFrame:
    """A resampled cell frame back in the shape of a one-epoch result table (duplicates averaged)."""
    t = c.groupby(["lr", "l2"], as_index=False).agg(
        test_err=("test_err", "mean"), val_err=("val_err", "mean"), diverged=("diverged", "all"))
    return t.assign(epoch=1, model=range(len(t)))


def spread_ratio(projected: str, plain: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Figure 3: the test error's spread over λ (below the largest) under normalised SGD, as a
    fraction of the same spread under the unprojected rule on the same grid."""
    def measure(results):
        a, b = cell_frame(results[projected], projected), cell_frame(results[plain], plain)
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
        return bootstrap(cell_frame(results[rule], rule), stat, over_cells=False)
    return measure


def best_lr_slope(rule: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Figure 4: the slope of log η* against log λ, η* chosen on the validation split, interior
    optima only; validation errors resampled binomially."""
    def measure(results):
        def stat(d):
            fit, _, _ = analysis.best_lr_slope(_as_table(d), n_boot=0)
            return fit.slope, fit.n
        return bootstrap(cell_frame(results[rule], rule), stat, over_cells=False)
    return measure


# ---------------------------------------------------------------------------------------------
# Measurements of the theory chapters (§2–§5): exact computations and the toy unit
# ---------------------------------------------------------------------------------------------

THEORY = "theory"  # the key of the theory chapters' computations in a results mapping


def exact(value: float, n: int, precision: float = 1e-9) -> Measurement:
    """An exact computation (float64, no sampling noise): its interval is its numerical precision."""
    return Measurement(value, value - precision, value + precision, n, 0,
                       "exact computation (float64); interval = numerical precision")


def invariance_gap(norm: str, per: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """§2: max |y(αw) − y(w)| over a batch's logits, conv weights scaled per unit or per layer."""
    def measure(results):
        from . import theory
        return exact(theory.output_change(norm, per), 10)
    return measure


def scaling_slope(column: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """§3: the log–log slope of ‖∇L(αw)‖ (or of ‖∇²L(αw)v‖) against α on the BN network."""
    def measure(results):
        from . import theory
        loss, w, _ = theory.net_loss_fn("batch")
        tab = theory.scaling_table(loss, w, np.logspace(-1, 2, 7))
        return exact(theory.loglog_slope(tab["alpha"], tab[column]), len(tab), 1e-6)
    return measure


def steady_state_exponent(results: Mapping[str, Any]) -> Measurement:
    """§4: the exponent e of the simulated steady-state ‖w‖ against η/λ under the paper's noise
    model (SGD, 64 units per cell, 3000 steps, the 4 × 3 grid of chapter 03), with a bootstrap
    over the cells; the simulation's own noise enters through the units' mean."""
    from . import theory
    lrs, l2s = theory.product_grid([0.03, 0.1, 0.3, 1.0], [0.003, 0.01, 0.03])
    sim = theory.noise_model_table(lrs, l2s, 3000, units=64)
    c = pd.DataFrame({"x": sim["lr"] / sim["l2"], "y": sim["simulated"]}).assign(
        seed=0, n_val=0, n_test=0, val_err=math.nan, test_err=math.nan)
    return bootstrap(c, lambda d: _loglog_slope(d["x"], d["y"]))


def toy_exponent(rule: str, which: str) -> Callable[[Mapping[str, Any]], Measurement]:
    """Table 1 on the toy unit: the separate exponent of η (``which='eta'``) or of λ in the
    equilibrium norm, over the rule's toy grid, with a bootstrap over its cells. (The exponent of
    η/λ alone is 1/4 by the scale symmetry on any grid symmetric in log η and log λ: an identity,
    not a measurement; the separate exponents are what the run measures.)"""
    def measure(results):
        run = results[THEORY]["toy_runs"][rule]
        c = pd.DataFrame({"lr": run.lr, "l2": run.l2, "norm": run.equilibrium_norm()}).assign(
            seed=0, fitted=True, n_val=0, n_test=0, val_err=math.nan, test_err=math.nan)

        def stat(d):
            pl = analysis.power_law_fit(d["lr"], d["l2"], d["norm"])
            return (pl.a if which == "eta" else -pl.b), pl.n
        return bootstrap(c, stat)
    return measure


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


def _register_theory_claims() -> None:
    for per in ("unit", "layer"):
        register(Claim(f"invariance/batch-{per}", "§2", f"batch normalisation: the output ignores the "
                       f"scale of the weights (conv weights scaled per {per})", 0.0, (-1e-4, 1e-4),
                       invariance_gap("batch", per), needs=(THEORY,)))
    register(Claim("gradient-scaling", "§3", "‖∇L(αw)‖ ∝ 1/α on the BN network", -1.0, around(-1.0, 0.01),
                   scaling_slope("grad_norm"), needs=(THEORY,)))
    register(Claim("steady-state", "§4", "SGD under the noise model: steady-state ‖w‖ ∝ (η/λ)^{1/4}",
                   0.25, around(0.25, 0.01), steady_state_exponent, needs=(THEORY,)))
    register(Claim("hessian-scaling", "§3", "‖∇²L(αw)v‖ ∝ 1/α² on the BN network", -2.0, around(-2.0, 0.01),
                   scaling_slope("hvp_norm"), needs=(THEORY,)))
    for name, r in RULES.items():
        if r.trainable and r.projection is None and r.steady_state:
            e = r.norm_exponent
            for which in ("eta", "lambda"):
                register(Claim(f"toy-exponent-{which}/{name}", "§5, Table 1 (toy unit)",
                               f"{r.label}: ‖w‖ ∝ {'η^e' if which == 'eta' else 'λ^(−e)'} with e = "
                               f"{e:.3g} at equilibrium, on the toy unit", e, around(e, 0.03),
                               toy_exponent(name, which), fixed_at=FIRST_RESULTS, needs=(THEORY,),
                               primary=r.in_paper))


_register_theory_claims()
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
        c = cell_frame(results[rule], rule, d_min=d)
        m = bootstrap(c, lambda x: _loglog_slope((x.lr / x.l2)[x.fitted], x.layer_norm_0[x.fitted]),
                      n_boot=N_BOOT // 2)
        rows.append({"d_min": d, "e": m.value, "lo": m.lo, "hi": m.hi, "n": m.n,
                     "verdict": decide(m, claim.region)})
    return pd.DataFrame(rows)


def with_region(claim_id: str, region: tuple[float, float]) -> Claim:
    """A copy of a registered claim with another accepted region (for exercises; never registered)."""
    return replace(CLAIMS[claim_id], region=region)


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A verdict table as a chapter shows it: the claim, its criterion, the measurement with its
    95 % interval, the points and seeds it rests on, the verdict and the criterion's history."""
    def interval(r):
        if not math.isfinite(r["measured"]):
            return "—"
        if not (math.isfinite(r["lo"]) and math.isfinite(r["hi"])):
            return f"{r['measured']:.3g} (no interval)"
        return f"{r['measured']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}]"

    out = pd.DataFrame({
        "where": table["where"], "claim": table["claim"], "accepted": table["criterion"],
        "measured [95 % interval]": [interval(r) for _, r in table.iterrows()],
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
