"""Measurements on sweep result tables: the numbers behind Figures 1–4 and Table 1 (§6).

Every function here is pure: it takes the tidy table of a sweep (one row per model and epoch, as
written by ``train.train_grid``) and returns numbers or small tables; nothing trains, nothing plots.

Conventions, as in the rest of the library: η is the learning rate, λ the L2 coefficient of the
objective L + λ‖w‖² (gradient 2λw), ‖w‖ the norm of a unit's (or a layer's) weights and
η_eff = η/‖w‖^p the step size seen by the direction w/‖w‖ (p from the rule's record in ``rules``).
Diverged models are never measured: their rows carry NaN and are dropped before any fit.

A note on Table 1 of the paper. Its last column prints η_eff ∝ √(η/λ) for SGD and (η²/λ)^{1/3} for
RMSProp/ADAM, but substituting its own weight scale ‖w‖ ∝ (η/λ)^e into η/‖w‖^p gives
η_eff ∝ η^{1−pe} λ^{pe}: √(ηλ) and (η²λ)^{1/3}. Only the latter is consistent with the optimal
learning rates the paper derives and measures (η* ∝ 1/λ and 1/√λ keep ηλ, resp. η²λ, constant).
A rule's ``eta_eff_exponents`` hold the derived form; its ``printed_eta_eff`` the printed one, so
that the data can say which diagonals the test error follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .rules import DECOUPLED, GRADIENT, get_rule

EQUILIBRIUM_D_MIN = 3.0  # relaxation times a cell needs before its norm counts as equilibrated
COLLAPSE_FACTOR = 1e-3  # collapsed: the layer norm ended below 1e-3 of its value after epoch 1 …
COLLAPSE_FLOOR = 1e-6  # … or below this (orders of magnitude above float32's floor, far below any
# equilibrium norm of these networks)


# ---------------------------------------------------------------------------------------------
# Tables to grids
# ---------------------------------------------------------------------------------------------


def last_epoch(table: pd.DataFrame) -> int:
    return int(table["epoch"].max())


def final_rows(table: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """One row per model at ``epoch`` (default: the last), sorted by model."""
    e = last_epoch(table) if epoch is None else epoch
    rows = table[table["epoch"] == e]
    if rows.empty:
        raise ValueError(f"epoch: the table has no rows for epoch {e}")
    return rows.sort_values("model").reset_index(drop=True)


def grid(table: pd.DataFrame, column: str, epoch: int | None = None) -> pd.DataFrame:
    """``column`` at ``epoch`` as an (η rows × λ columns) frame, both ascending; NaN where diverged."""
    rows = final_rows(table, epoch)
    values = rows[column].where(~rows["diverged"].astype(bool)).to_numpy(float)
    lr, l2 = rows["lr"].to_numpy(float), rows["l2"].to_numpy(float)
    lrs, l2s = np.unique(lr), np.unique(l2)
    i, j = np.searchsorted(lrs, lr), np.searchsorted(l2s, l2)
    if np.unique(i * len(l2s) + j).size != len(rows):  # what DataFrame.pivot refuses, faster
        raise ValueError("results: two models of the table share one (η, λ)")
    out = np.full((len(lrs), len(l2s)), np.nan)
    out[i, j] = values
    return pd.DataFrame(out, index=pd.Index(lrs, name="lr"), columns=pd.Index(l2s, name="l2"))


def diverged_grid(table: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """True where the model at (η, λ) diverged by ``epoch``."""
    rows = final_rows(table, epoch)
    out = rows.pivot(index="lr", columns="l2", values="diverged").astype(bool)
    return out.sort_index().sort_index(axis=1)


def phase_end_epochs(table: pd.DataFrame) -> list[int]:
    """The last epoch of each constant-learning-rate phase (the schedule's ÷10 steps), in order."""
    scale = table.groupby("epoch")["lr_scale"].first().sort_index()
    ends = [int(e) for e, nxt in zip(scale.index[:-1], scale.values[1:], strict=True)
            if not math.isclose(scale[e], nxt)]
    return ends + [int(scale.index[-1])]


# ---------------------------------------------------------------------------------------------
# Fits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """Least-squares line log10 y = intercept + slope·log10 x, with the slope's standard error."""

    slope: float
    stderr: float
    intercept: float
    n: int
    r2: float

    def agrees(self, theory: float, tol: float) -> bool | None:
        """|slope − theory| ≤ tol, or None when there is nothing to compare."""
        return None if not math.isfinite(self.slope) else abs(self.slope - theory) <= tol


def ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Ordinary least squares: coefficients, their standard errors (NaN without residual degrees of
    freedom) and R²."""
    n, k = design.shape
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else math.nan
    if n > k:
        cov = ss_res / (n - k) * np.linalg.pinv(design.T @ design)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    else:
        se = np.full(k, math.nan)
    return coef, se, r2


def loglog_fit(x, y) -> Fit:
    """Slope of log10 y against log10 x over the points where both are positive and finite."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log10(x[ok]), np.log10(y[ok])
    if ok.sum() < 2 or np.ptp(lx) == 0:
        return Fit(math.nan, math.nan, math.nan, int(ok.sum()), math.nan)
    coef, se, r2 = ols(np.column_stack([np.ones_like(lx), lx]), ly)
    return Fit(float(coef[1]), float(se[1]), float(coef[0]), int(ok.sum()), r2)


@dataclass(frozen=True)
class PowerLaw:
    """log10 y = c + a·log10 η + b·log10 λ, with standard errors of a and b."""

    a: float
    a_se: float
    b: float
    b_se: float
    n: int
    r2: float


def power_law_fit(lr, l2, y) -> PowerLaw:
    """Fit y ∝ η^a λ^b by least squares in logs (points with η, λ, y > 0 and finite)."""
    lr, l2, y = (np.asarray(v, float) for v in (lr, l2, y))
    ok = np.isfinite(lr) & np.isfinite(l2) & np.isfinite(y) & (lr > 0) & (l2 > 0) & (y > 0)
    n = int(ok.sum())
    design = np.column_stack([np.ones(n), np.log10(lr[ok]), np.log10(l2[ok])])
    if n < 3 or np.linalg.matrix_rank(design) < 3:
        return PowerLaw(math.nan, math.nan, math.nan, math.nan, n, math.nan)
    coef, se, r2 = ols(design, np.log10(y[ok]))
    return PowerLaw(float(coef[1]), float(se[1]), float(coef[2]), float(se[2]), n, r2)


# ---------------------------------------------------------------------------------------------
# Figure 1: the weight norm at equilibrium
# ---------------------------------------------------------------------------------------------


def relaxation_rate(optimizer: str, lr, l2, hyper: Mapping[str, float] | None = None):
    """Relaxation times per step of ‖w‖², from the inputs alone (η_t, λ, ρ; never the measured
    angle or norm, which the fits use).

    * Gradient rules and decoupled decay: the decay shrinks ‖w‖² by ≈ 4η_tλ per step; heavy-ball
      momentum multiplies the step by 1/(1 − ρ). A decoupled decay shrinks w whatever the momentum.
    * Adaptive rules with coupled L2: their symmetry (η, λ) → (ηα, λα⁻²) lets the dynamics depend
      on η²λ only, so the rate is 4(η_t²λ)^{1/3}, with the gradient scale at unit norm (unknown
      before the run) set to 1 in advance, not fitted; ``claims.sensitivity`` shows the fits
      over a range of thresholds, which covers other prefactors.
    * Normalised SGD: ‖w‖ = 1 always: infinite."""
    rule = get_rule(optimizer)
    lr, l2 = np.asarray(lr, float), np.asarray(l2, float)
    if rule.projection is not None:
        return np.full_like(lr, math.inf)
    if rule.step_degree == GRADIENT or rule.decay == DECOUPLED:
        return 4 * lr * l2 / (1 - rule.hyper(dict(hyper or {})).get("rho", 0.0))
    return 4 * np.cbrt(lr**2 * l2)


def relaxation(
    table: pd.DataFrame,
    optimizer: str,
    steps_per_epoch: int,
    epoch: int | None = None,
    hyper: Mapping[str, float] | None = None,
) -> pd.Series:
    """How many relaxation times of ‖w‖² each model has lived through by ``epoch``: D = Σ_t r_t,
    with r_t from ``relaxation_rate`` and the scheduled η_t. A Series indexed by model."""
    e = last_epoch(table) if epoch is None else epoch
    rows = table[table["epoch"] <= e]
    rate = relaxation_rate(optimizer, rows["lr"] * rows["lr_scale"], rows["l2"], hyper)
    return pd.Series(rate * steps_per_epoch, index=rows.index).groupby(rows["model"]).sum()


def collapsed(table: pd.DataFrame, epoch: int | None = None, column: str = "layer_norm_0") -> pd.Series:
    """True (per model, in model order) where ``column`` fell by more than ``COLLAPSE_FACTOR``
    after the first epoch or below ``COLLAPSE_FLOOR``: the decay won outright (for momentum, say,
    when 2ηλ/(1 − ρ) is of order 1) and the norm carries no equilibrium."""
    first = final_rows(table, 1)[column].to_numpy()
    rows = final_rows(table, epoch)
    last = rows[column].to_numpy()
    with np.errstate(invalid="ignore"):
        out = (last < COLLAPSE_FACTOR * first) | (last < COLLAPSE_FLOOR)
    return pd.Series(out, index=rows["model"])


def collapsed_grid(table: pd.DataFrame, epoch: int | None = None,
                   column: str = "layer_norm_0") -> pd.DataFrame:
    """``collapsed`` as an (η rows × λ columns) frame, like ``grid``."""
    rows = final_rows(table, epoch).assign(_c=collapsed(table, epoch, column).to_numpy())
    out = rows.pivot(index="lr", columns="l2", values="_c").astype(bool)
    return out.sort_index().sort_index(axis=1)


def cells(
    table: pd.DataFrame,
    optimizer: str,
    steps_per_epoch: int,
    epoch: int | None = None,
    d_min: float = EQUILIBRIUM_D_MIN,
    hyper: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per model at ``epoch`` with the exclusions, fixed in advance and computed from the
    inputs: ``diverged`` (a loss that was not finite), ``collapsed`` (see ``collapsed``),
    ``relaxation`` (see ``relaxation``) and ``equilibrium`` (≥ ``d_min`` of them, λ > 0, not
    diverged); ``fitted`` = at equilibrium and not collapsed."""
    rows = final_rows(table, epoch)
    out = rows.assign(eta_over_l2=rows["lr"] / rows["l2"])
    out["diverged"] = rows["diverged"].astype(bool).to_numpy() | ~np.isfinite(rows["layer_norm_0"])
    out["collapsed"] = collapsed(table, epoch).to_numpy() & ~out["diverged"]
    out["relaxation"] = relaxation(table, optimizer, steps_per_epoch, epoch, hyper).reindex(
        rows["model"]).to_numpy()
    out["equilibrium"] = (out["relaxation"] >= d_min) & (out["l2"] > 0) & ~out["diverged"]
    out["fitted"] = out["equilibrium"] & ~out["collapsed"]
    return out


def norm_exponent(
    table: pd.DataFrame,
    optimizer: str,
    steps_per_epoch: int,
    epoch: int | None = None,
    column: str = "layer_norm_0",
    d_min: float = EQUILIBRIUM_D_MIN,
    hyper: Mapping[str, float] | None = None,
    max_train_err: float | None = None,
) -> tuple[Fit, pd.DataFrame]:
    """Fit ‖w‖ ∝ (η/λ)^e over the fitted cells (``cells``: at equilibrium, neither diverged nor
    collapsed).

    With ``max_train_err``, only cells whose final training error is at most that value are fitted
    (a secondary check, chosen after seeing results: the noise model assumes comparable gradient
    noise in every cell, which a network stuck near chance does not have). Returns the fit and the
    per-cell frame (``cells`` plus ``norm`` and ``learned``)."""
    c = cells(table, optimizer, steps_per_epoch, epoch, d_min, hyper)
    c["norm"] = c[column].where(~c["diverged"])
    c["learned"] = (c["train_err"] <= max_train_err) if max_train_err is not None else ~c["diverged"]
    c["fitted"] &= c["learned"]
    eq = c[c["fitted"]]
    return loglog_fit(eq["eta_over_l2"], eq["norm"]), c


def phase_norm_ratio(table: pd.DataFrame, epoch: int, column: str = "layer_norm_0") -> pd.Series:
    """``column`` at ``epoch`` divided by its value at the last epoch, per model (in model order).

    With ``epoch`` the end of the first learning-rate phase, a ratio near 1 means the norm froze
    after the first ÷10 step; near 100^e it means it re-equilibrated at the final η/100."""
    early, late = final_rows(table, epoch), final_rows(table)
    return pd.Series(early[column].to_numpy() / late[column].to_numpy(), index=late["model"])


# ---------------------------------------------------------------------------------------------
# Figure 2: is the test error constant along lines of constant η_eff?
# ---------------------------------------------------------------------------------------------


def log_eta_eff(lr, l2, exponents: tuple[float, float]) -> np.ndarray:
    """log10 of η^a λ^b (the theoretical effective learning rate up to a constant)."""
    a, b = exponents
    return a * np.log10(np.asarray(lr, float)) + b * np.log10(np.asarray(l2, float))


def diagonal_classes(keys, tol: float = 0.02) -> np.ndarray:
    """Label values of log10 η^a λ^b that agree within ``tol`` as one class (one diagonal).

    The profiles' grids are rounded to three significant digits (0.0316 for 10^{-1.5}), so cells on
    the same diagonal differ by up to ~1e-3 in log10; a gap larger than ``tol`` starts a new class.
    Returns the class's mean key for each input, in input order."""
    keys = np.asarray(keys, float)
    if keys.size == 0:
        return keys
    order = np.argsort(keys)
    labels = np.cumsum(np.r_[0, np.diff(keys[order]) > tol])
    out = np.empty_like(keys)
    for lab in np.unique(labels):
        members = order[labels == lab]
        out[members] = keys[members].mean()
    return np.round(out, 6)


def grouped_r2(y, groups) -> float:
    """Adjusted R² of y explained by its group means (one-way analysis of variance).

    Adjusted for the number of groups, so groupings with more classes get no free credit:
    1 − [SS_within/(n − k)] / [SS_total/(n − 1)]; NaN without degrees of freedom left."""
    df = pd.DataFrame({"y": np.asarray(y, float), "g": np.asarray(groups)}).dropna()
    n, k = len(df), df["g"].nunique()
    ss_tot = float(((df["y"] - df["y"].mean()) ** 2).sum())
    if n - k <= 0 or n < 2 or ss_tot == 0:
        return math.nan
    ss_within = float(((df["y"] - df.groupby("g")["y"].transform("mean")) ** 2).sum())
    return 1 - (ss_within / (n - k)) / (ss_tot / (n - 1))


def diagonal_consistency(
    table: pd.DataFrame,
    optimizer: str,
    column: str = "test_err",
    epoch: int | None = None,
    exponents: tuple[float, float] | None = None,
    where: np.ndarray | pd.Series | None = None,
) -> dict[str, float]:
    """How well the class of η_eff = η^a λ^b explains ``column`` over the (η, λ) grid
    (or over the cells selected by the boolean mask ``where``, in model order).

    Cells with equal η^a λ^b (within 0.02 in log10, see ``diagonal_classes``) form a class: a
    diagonal of the heatmap.
    Returns adjusted R² for three groupings (the η_eff class, η alone, λ alone), the mean standard
    deviation within a diagonal (classes with ≥ 2 cells) and the standard deviation of the class
    means (both in the column's units), and counts. Diverged cells and λ = 0 are left out."""
    exponents = get_rule(optimizer).eta_eff_exponents if exponents is None else exponents
    rows = final_rows(table, epoch)
    keep = ~rows["diverged"].astype(bool) & np.isfinite(rows[column]) & (rows["l2"] > 0)
    if where is not None:
        keep &= np.asarray(where, bool)
    rows = rows[keep]
    y = rows[column].to_numpy(float)
    cls = diagonal_classes(log_eta_eff(rows["lr"], rows["l2"], exponents))
    by_class = pd.DataFrame({"y": y, "c": cls}).groupby("c")["y"]
    sizes = by_class.size()
    within = by_class.std(ddof=1)[sizes >= 2]
    return {
        "r2_diagonal": grouped_r2(y, cls),
        "r2_eta": grouped_r2(y, rows["lr"]),
        "r2_lambda": grouped_r2(y, rows["l2"]),
        "within_std": float(within.mean()) if len(within) else math.nan,
        "between_std": float(by_class.mean().std(ddof=1)) if len(sizes) >= 2 else math.nan,
        "n_cells": int(len(y)),
        "n_diagonals": int(len(sizes)),
        "n_diverged": int(final_rows(table, epoch)["diverged"].astype(bool).sum()),
    }


# ---------------------------------------------------------------------------------------------
# Figure 3: does λ matter when the weights are normalised?
# ---------------------------------------------------------------------------------------------


def lambda_sensitivity(
    table: pd.DataFrame,
    column: str = "test_err",
    lam_split: float | None = None,
    epoch: int | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """How much ``column`` moves with λ at fixed η.

    The λ grid is cut at ``lam_split`` (default: its second-largest value): "small" λ ≤ lam_split,
    "large" λ above it. For every η: ``spread`` = max − min over the small λ, ``excess`` = mean over
    the large λ minus mean over the small ones. Returns the means over η and the per-η frame.
    Diverged cells are left out (and counted)."""
    g = grid(table, column, epoch)
    lams = np.array(g.columns, float)
    if lam_split is None:
        lam_split = float(lams[-2]) if len(lams) >= 2 else float(lams[-1])
    small, large = g.loc[:, lams <= lam_split], g.loc[:, lams > lam_split]
    per_eta = pd.DataFrame({
        "spread": small.max(axis=1) - small.min(axis=1),
        "excess": large.mean(axis=1) - small.mean(axis=1),
        "n_small": small.notna().sum(axis=1),
    })
    per_eta.loc[per_eta["n_small"] < 2, "spread"] = math.nan
    summary = {
        "lam_split": lam_split,
        "spread_mean": float(per_eta["spread"].mean()),
        "excess_mean": float(per_eta["excess"].mean()),
        "n_diverged": int(diverged_grid(table, epoch).to_numpy().sum()),
    }
    return summary, per_eta


def small_step_rise(
    table: pd.DataFrame, column: str = "test_err", max_shrink: float = 0.05, epoch: int | None = None
) -> tuple[float, pd.DataFrame]:
    """For normalised SGD: how much ``column`` rises with λ where the rescaling step cannot explain it.

    Shrinking by (1 − 2ηλ) before rescaling to norm 1 enlarges the gradient step by 1/(1 − 2ηλ),
    negligible while 2ηλ ≤ ``max_shrink``. For each η with at least two such λ: ``column`` at the
    largest of them minus ``column`` at the smallest λ. Returns the mean over η and the per-η frame."""
    g = grid(table, column, epoch)
    out = []
    for eta in g.index:
        lams = [lam for lam in g.columns if 2 * eta * lam <= max_shrink and np.isfinite(g.loc[eta, lam])]
        if len(lams) >= 2:
            out.append({"lr": eta, "lam_low": min(lams), "lam_high": max(lams),
                        "rise": float(g.loc[eta, max(lams)] - g.loc[eta, min(lams)])})
    per_eta = pd.DataFrame(out, columns=["lr", "lam_low", "lam_high", "rise"])
    return (float(per_eta["rise"].mean()) if len(per_eta) else math.nan), per_eta


# ---------------------------------------------------------------------------------------------
# Figure 4: the best learning rate for each λ
# ---------------------------------------------------------------------------------------------


def parabola_vertex(x: np.ndarray, y: np.ndarray) -> float | None:
    """x of the minimum of the parabola through three points, or None if it opens downwards."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    if not a > 0:
        return None
    return float(np.clip(-b / (2 * a), x0, x2))


def best_lr(table: pd.DataFrame, column: str = "val_err", epoch: int | None = None) -> pd.DataFrame:
    """η* for each λ: the grid η with the lowest ``column`` (validation error), refined by the vertex
    of a parabola in log10 η through it and its two neighbours.

    ``edge`` marks a minimum on the border of the η grid (or next to a diverged cell): there the
    true optimum may lie outside the grid, η* is the unrefined grid value and the point should not
    enter a fit. A diverged cell counts as worse than any trained one."""
    g = grid(table, column, epoch)
    lx = np.log10(np.array(g.index, float))
    out = []
    for lam in g.columns:
        y = g[lam].to_numpy(float)
        if not np.isfinite(y).any():
            out.append({"l2": lam, "lr_grid": math.nan, "lr_star": math.nan, "err_min": math.nan,
                        "edge": True})
            continue
        i = int(np.nanargmin(np.where(np.isfinite(y), y, np.inf)))
        edge = i == 0 or i == len(y) - 1 or not np.isfinite(y[i - 1 : i + 2]).all()
        x_star = lx[i]
        if not edge:
            v = parabola_vertex(lx[i - 1 : i + 2], y[i - 1 : i + 2])
            x_star = lx[i] if v is None else v
        out.append({"l2": float(lam), "lr_grid": float(10 ** lx[i]), "lr_star": float(10**x_star),
                    "err_min": float(y[i]), "edge": bool(edge)})
    return pd.DataFrame(out)


def best_lr_slope(
    table: pd.DataFrame,
    column: str = "val_err",
    epoch: int | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[Fit, dict[str, float], pd.DataFrame]:
    """Slope s of log η* against log λ over the λ with an interior optimum (λ > 0).

    Returns the least-squares fit (with the regression standard error), a bootstrap over the λ
    points (``boot_se``, ``boot_lo``/``boot_hi``: the 2.5 and 97.5 percentiles; resamples with a
    single distinct λ are skipped) and the per-λ frame from ``best_lr``."""
    per_lam = best_lr(table, column, epoch)
    use = per_lam[~per_lam["edge"] & (per_lam["l2"] > 0)]
    fit = loglog_fit(use["l2"], use["lr_star"])
    boot = {"boot_se": math.nan, "boot_lo": math.nan, "boot_hi": math.nan, "n_boot": 0}
    if fit.n >= 3:
        rng = np.random.default_rng(seed)
        x, y = use["l2"].to_numpy(float), use["lr_star"].to_numpy(float)
        slopes = []
        for _ in range(n_boot):
            k = rng.integers(0, len(x), len(x))
            if len(np.unique(x[k])) >= 2:
                slopes.append(loglog_fit(x[k], y[k]).slope)
        if slopes:
            s = np.array(slopes)
            boot = {"boot_se": float(s.std(ddof=1)), "boot_lo": float(np.percentile(s, 2.5)),
                    "boot_hi": float(np.percentile(s, 97.5)), "n_boot": len(s)}
    return fit, boot, per_lam


# ---------------------------------------------------------------------------------------------
# Table 1 on the network
# ---------------------------------------------------------------------------------------------


def steps_per_epoch(provenance: Mapping[str, Any]) -> int:
    """Optimisation steps per epoch of a stored sweep (from its provenance)."""
    if "steps_per_epoch" in provenance:
        return int(provenance["steps_per_epoch"])
    spec = provenance["spec"]
    return int(spec["n_train"]) // int(spec["batch_size"])


def _table_and_meta(result: Any) -> tuple[pd.DataFrame, Mapping[str, Any]]:
    """Accept a ``results.SweepResult`` or a (table, provenance) pair."""
    if isinstance(result, tuple):
        return result
    return result.table, result.provenance


def table1_network(
    results: Mapping[str, Any], epoch: int | None = None, d_min: float = EQUILIBRIUM_D_MIN,
    max_train_err: float | None = None,
) -> pd.DataFrame:
    """Table 1 measured on the network, one row per update rule in ``results``.

    Over the cells at equilibrium (see ``norm_exponent``) at ``epoch`` (default: the last):
      * ``norm_exp``: e in ‖W₁‖ ∝ (η/λ)^e (first conv layer), with its standard error;
      * ``eta_eff_a``, ``eta_eff_b``: a, b in η_eff ∝ η^a λ^b with η_eff = η_t/‖w̄‖^p, ‖w̄‖ the
        mean norm of the first layer's units and η_t the scheduled learning rate (the schedule's
        factor is the same for every cell). The table's ``eta_eff_0`` column, the mean over units
        of η_t/‖w_u‖^p, is not used: a few units whose norm has collapsed dominate that mean;
      * ``angle_a``, ``angle_b``: the same fit to the measured angular update per step, which moves
        with η_eff without assuming the power p (at equilibrium it is even independent of the
        gradient noise: for SGD it is fixed by ηλ alone).
    Theory columns hold Table 1's values (η_eff in the derived form, see the module docstring)."""
    out = []
    for rule, result in results.items():
        table, meta = _table_and_meta(result)
        hyper = meta.get("spec", {}).get("hyper")
        fit, c = norm_exponent(table, rule, steps_per_epoch(meta), epoch, d_min=d_min,
                               hyper=hyper, max_train_err=max_train_err)
        rows = final_rows(table, epoch)
        eq = c["fitted"].to_numpy()
        a_th, b_th = get_rule(rule).eta_eff_exponents
        row = {"optimizer": rule, "norm_exp_theory": get_rule(rule).norm_exponent, "norm_exp": fit.slope,
               "norm_exp_se": fit.stderr, "n_equilibrium": int(eq.sum()), "n_cells": len(c),
               "eta_eff_a_theory": a_th, "eta_eff_b_theory": b_th}
        eta_eff = rows["lr"] * rows["lr_scale"] / rows["unit_norm_0"] ** get_rule(rule).eta_eff_power
        for name, values in (("eta_eff", eta_eff), ("angle", rows["angle_0"])):
            pl = power_law_fit(rows["lr"][eq], rows["l2"][eq], values[eq])
            row.update({f"{name}_a": pl.a, f"{name}_a_se": pl.a_se, f"{name}_b": pl.b,
                        f"{name}_b_se": pl.b_se})
        out.append(row)
    return pd.DataFrame(out)
