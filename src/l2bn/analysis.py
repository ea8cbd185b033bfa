"""Measurements on sweep result tables: the numbers behind Figures 1–4 and Table 1 (§6).

Every function here is pure: it takes the tidy table of a sweep (one row per model and epoch, as
written by ``train.train_grid``) and returns numbers or small tables; nothing trains, nothing plots.

Conventions, as in the rest of the library: η is the learning rate, λ the L2 coefficient of the
objective L + λ‖w‖² (gradient 2λw), ‖w‖ the norm of a unit's (or a layer's) weights and
η_eff = η/‖w‖^p the step size seen by the direction w/‖w‖ (p from ``scale.EFFECTIVE_LR_POWER``).
Diverged models are never measured: their rows carry NaN and are dropped before any fit.

A note on Table 1 of the paper. Its last column prints η_eff ∝ √(η/λ) for SGD and (η²/λ)^{1/3} for
RMSProp/ADAM, but substituting its own weight scale ‖w‖ ∝ (η/λ)^e into η/‖w‖^p gives
η_eff ∝ η^{1−pe} λ^{pe}: √(ηλ) and (η²λ)^{1/3}. Only the latter is consistent with the optimal
learning rates the paper derives and measures (η* ∝ 1/λ and 1/√λ keep ηλ, resp. η²λ, constant).
``ETA_EFF_EXPONENTS`` holds the derived form; ``PRINTED_ETA_EFF_EXPONENTS`` the printed one, so that
the data can say which diagonals the test error follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .profiles import OPTIMIZER_DEFAULTS
from .scale import EFFECTIVE_LR_POWER, NORM_EXPONENT

# ---------------------------------------------------------------------------------------------
# Theory values (Table 1 and §3), derived from the two tables in scale.py
# ---------------------------------------------------------------------------------------------

SGD_FAMILY = ("sgd", "momentum", "nesterov")
ADAPTIVE = ("rmsprop", "adam")


def eta_eff_exponents(optimizer: str) -> tuple[float, float]:
    """(a, b) in η_eff ∝ η^a λ^b at equilibrium: η/‖w‖^p with ‖w‖ ∝ (η/λ)^e gives a = 1 − pe, b = pe."""
    pe = EFFECTIVE_LR_POWER[optimizer] * NORM_EXPONENT[optimizer]
    return 1.0 - pe, pe


ETA_EFF_EXPONENTS = {rule: eta_eff_exponents(rule) for rule in EFFECTIVE_LR_POWER}
# The last column of the paper's Table 1 as printed (λ in the denominator), kept for comparison.
PRINTED_ETA_EFF_EXPONENTS = {
    "sgd": (0.5, -0.5), "momentum": (0.5, -0.5), "nesterov": (0.5, -0.5),
    "rmsprop": (2 / 3, -1 / 3), "adam": (2 / 3, -1 / 3),
}


def best_lr_slope_theory(optimizer: str) -> float:
    """d log η* / d log λ when η* keeps η_eff = η^a λ^b fixed: −b/a (−1 for SGD, −1/2 for ADAM)."""
    a, b = ETA_EFF_EXPONENTS[optimizer]
    return -b / a


# Agreement tolerances of the verdict (quick profile, fixed before looking at the results).
TOLERANCE = {
    "norm_exponent": 0.1,  # ‖w‖ ∝ (η/λ)^e: |e − e_theory| ≤ 0.1
    "best_lr_slope": 0.3,  # η* ∝ λ^s: |s − s_theory| ≤ 0.3
    "eta_eff_exponent": 0.2,  # η_eff ∝ η^a λ^b, per coefficient (p·0.1 with p ≤ 2)
    "lambda_spread_ratio": 0.5,  # normalised SGD: λ-spread at most half of plain SGD's
}
EQUILIBRIUM_D_MIN = 3.0  # relaxation times a cell needs before its norm counts as equilibrated


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
    values = rows[column].where(~rows["diverged"].astype(bool))
    out = rows.assign(_v=values).pivot(index="lr", columns="l2", values="_v")
    out.index.name, out.columns.name = "lr", "l2"
    return out.sort_index().sort_index(axis=1)


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


NO_FIT = Fit(math.nan, math.nan, math.nan, 0, math.nan)


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


def relaxation(
    table: pd.DataFrame,
    optimizer: str,
    steps_per_epoch: int,
    epoch: int | None = None,
    layer: int = 0,
    hyper: Mapping[str, float] | None = None,
) -> pd.Series:
    """How many relaxation times of ‖w‖² each model has lived through by ``epoch``: D = Σ_t r_t.

    r_t is the rate per step at which the norm forgets where it started:
      * SGD, momentum, Nesterov: the L2 term alone shrinks ‖w‖² by (1 − 2η_tλ)² ≈ 1 − 4η_tλ per step,
        and momentum multiplies the step by 1/(1 − ρ): r_t = 4η_tλ/(1 − ρ) (exact, from η, λ and the
        schedule). AdamW's decoupled decay is the same with ρ = 0.
      * RMSProp, ADAM: the L2 term is divided by the running gradient scale, which the table does not
        hold. At equilibrium the shrinking balances the growth from steps orthogonal to w, whose
        rate per step is (1 + ρ₁)/(1 − ρ₁)·Δθ² (Δθ the measured angular update of the layer; the factor
        undoes ADAM's averaging of uncorrelated gradients, ρ₁ = 0 for RMSProp). This estimate is
        exact at equilibrium and errs high when λ is too small to matter.
      * normalised SGD: ‖w‖ = 1 always: infinity.

    Returns a Series indexed by model (NaN for diverged models).
    """
    e = last_epoch(table) if epoch is None else epoch
    hp = {**OPTIMIZER_DEFAULTS.get(optimizer, {}), **(hyper or {})}
    rows = table[table["epoch"] <= e]
    if optimizer == "normalized_sgd":
        rate = pd.Series(math.inf, index=rows.index)
    elif optimizer in SGD_FAMILY or optimizer == "adamw":
        rho = hp.get("rho", 0.0) if optimizer in SGD_FAMILY else 0.0
        rate = 4 * rows["lr"] * rows["lr_scale"] * rows["l2"] / (1 - rho)
    elif optimizer in ADAPTIVE:
        rho1 = hp.get("rho1", 0.0)
        rate = (1 + rho1) / (1 - rho1) * rows[f"angle_{layer}"] ** 2
    else:
        raise ValueError(f"optimizer: no relaxation model for {optimizer!r}")
    d = (rate * steps_per_epoch).groupby(rows["model"]).sum(min_count=1)
    dead = final_rows(table, e).set_index("model")["diverged"].astype(bool)
    return d.where(~dead.reindex(d.index, fill_value=True))


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
    """Fit ‖w‖ ∝ (η/λ)^e over the cells at equilibrium (D ≥ ``d_min`` relaxation times, λ > 0).

    With ``max_train_err``, only cells whose final training error is at most that value are fitted
    (a secondary check: the noise model assumes comparable gradient noise in every cell, which a
    network stuck near chance does not have). Returns the fit and the per-cell frame (lr, l2,
    eta_over_l2, norm, relaxation, equilibrium, learned, fitted)."""
    rows = final_rows(table, epoch)
    layer = int(column.rsplit("_", 1)[-1]) if column[-1].isdigit() else 0
    d = relaxation(table, optimizer, steps_per_epoch, epoch, layer, hyper)
    cells = pd.DataFrame({
        "lr": rows["lr"], "l2": rows["l2"], "eta_over_l2": rows["lr"] / rows["l2"],
        "norm": rows[column].where(~rows["diverged"].astype(bool)),
        "relaxation": d.reindex(rows["model"]).to_numpy(),
    })
    cells["equilibrium"] = (
        (cells["relaxation"] >= d_min) & np.isfinite(cells["norm"]) & (cells["l2"] > 0)
    )
    cells["learned"] = (rows["train_err"] <= max_train_err).to_numpy() if max_train_err is not None \
        else np.isfinite(cells["norm"])
    cells["fitted"] = cells["equilibrium"] & cells["learned"]
    eq = cells[cells["fitted"]]
    return loglog_fit(eq["eta_over_l2"], eq["norm"]), cells


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
    exponents = ETA_EFF_EXPONENTS[optimizer] if exponents is None else exponents
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
# Table 1 on the network and the verdict
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
        fit, cells = norm_exponent(table, rule, steps_per_epoch(meta), epoch, d_min=d_min,
                                   hyper=hyper, max_train_err=max_train_err)
        rows = final_rows(table, epoch)
        eq = cells["fitted"].to_numpy()
        a_th, b_th = ETA_EFF_EXPONENTS[rule]
        row = {"optimizer": rule, "norm_exp_theory": NORM_EXPONENT[rule], "norm_exp": fit.slope,
               "norm_exp_se": fit.stderr, "n_equilibrium": int(eq.sum()), "n_cells": len(cells),
               "eta_eff_a_theory": a_th, "eta_eff_b_theory": b_th}
        eta_eff = rows["lr"] * rows["lr_scale"] / rows["unit_norm_0"] ** EFFECTIVE_LR_POWER[rule]
        for name, values in (("eta_eff", eta_eff), ("angle", rows["angle_0"])):
            pl = power_law_fit(rows["lr"][eq], rows["l2"][eq], values[eq])
            row.update({f"{name}_a": pl.a, f"{name}_a_se": pl.a_se, f"{name}_b": pl.b,
                        f"{name}_b_se": pl.b_se})
        out.append(row)
    return pd.DataFrame(out)


def _claim(claim: str, figure: str, theory: float, value: float, se: float, criterion: str,
           agrees: bool | str | None, meta: Mapping[str, Any], n: int) -> dict[str, Any]:
    spec = meta.get("spec", {})
    if agrees is None:
        verdict = "not measured"
    elif agrees == INCONCLUSIVE:
        verdict = INCONCLUSIVE + " (s.e. above tolerance)"
    else:
        verdict = "agrees" if agrees else "disagrees"
    return {"claim": claim, "figure": figure, "theory": theory, "measured": value, "stderr": se,
            "criterion": criterion, "n": n, "profile": spec.get("profile", "?"),
            "dataset": meta.get("dataset", {}).get("name", spec.get("dataset", "?")),
            "verdict": verdict}


INCONCLUSIVE = "inconclusive"


def agreement(value: float, theory: float, tol: float, se: float = math.nan) -> bool | str | None:
    """True/False: |value − theory| ≤ tol; ``INCONCLUSIVE`` when the standard error exceeds the
    tolerance (the measurement cannot tell agreement from disagreement); None: nothing measured."""
    if not math.isfinite(value):
        return None
    if math.isfinite(se) and se > tol:
        return INCONCLUSIVE
    return abs(value - theory) <= tol


RULE_NAMES = {"sgd": "SGD", "momentum": "momentum", "nesterov": "Nesterov", "rmsprop": "RMSProp",
              "adam": "ADAM", "adamw": "AdamW", "normalized_sgd": "normalised SGD"}
FIGURE2_RULES = ("nesterov", "adam")
FIGURE4_RULES = ("sgd", "nesterov", "rmsprop", "adam")


def verdict_table(results: Mapping[str, Any], d_min: float = EQUILIBRIUM_D_MIN,
                  secondary_train_err: float | None = None) -> pd.DataFrame:
    """Each claim of §6 (and Table 1) that ``results`` (rule → SweepResult or (table, provenance))
    can test: theory value, measurement, standard error, the criterion of agreement and the verdict.

    Claims: the weight-norm exponent (Figure 1, Table 1); the λ-exponent of η_eff, measured on the
    angular update (Table 1; +pe derived, −pe as printed); the test error following the diagonals of
    constant η_eff rather than η or λ alone (Figure 2; derived and printed η_eff); λ-insensitivity of
    normalised SGD compared with plain SGD (Figure 3); the slope of η* against λ (Figure 4).

    With ``secondary_train_err``, each weight-norm claim gets a second, clearly labelled row fitted
    only on the equilibrated cells whose final training error is at most that value."""
    rows: list[dict[str, Any]] = []
    tol = TOLERANCE
    scaled = {r: v for r, v in results.items() if r in NORM_EXPONENT and r != "normalized_sgd"}
    t1 = table1_network(scaled, d_min=d_min).set_index("optimizer") if scaled else None
    t1b = (table1_network(scaled, d_min=d_min, max_train_err=secondary_train_err).set_index("optimizer")
           if scaled and secondary_train_err is not None else None)
    for rule, result in scaled.items():
        table, meta = _table_and_meta(result)
        r = t1.loc[rule]
        n_eq = int(r["n_equilibrium"])
        fig = "Figure 1" if rule in FIGURE2_RULES else "Table 1"
        rows.append(_claim(
            f"{RULE_NAMES[rule]}: ‖W₁‖ ∝ (η/λ)^e at equilibrium", fig, r["norm_exp_theory"],
            r["norm_exp"], r["norm_exp_se"],
            f"±{tol['norm_exponent']:g}; cells with ≥ {d_min:g} relaxation times",
            agreement(r["norm_exp"], r["norm_exp_theory"], tol["norm_exponent"], r["norm_exp_se"]),
            meta, n_eq))
        if t1b is not None:
            rb = t1b.loc[rule]
            rows.append(_claim(
                f"{RULE_NAMES[rule]}: ‖W₁‖ ∝ (η/λ)^e, secondary check on cells that learned", fig,
                rb["norm_exp_theory"], rb["norm_exp"], rb["norm_exp_se"],
                f"±{tol['norm_exponent']:g}; also training error ≤ {100 * secondary_train_err:g}% "
                "(filter chosen after seeing quick results)",
                agreement(rb["norm_exp"], rb["norm_exp_theory"], tol["norm_exponent"],
                          rb["norm_exp_se"]), meta, int(rb["n_equilibrium"])))
        printed_b = PRINTED_ETA_EFF_EXPONENTS.get(rule, (0, math.nan))[1]
        rows.append(_claim(
            f"{RULE_NAMES[rule]}: η_eff ∝ η^a λ^b, exponent b of λ (from the angular update)",
            "Table 1", r["eta_eff_b_theory"], r["angle_b"], r["angle_b_se"],
            f"±{tol['eta_eff_exponent']:g}; the printed table implies {printed_b:.2f}",
            agreement(r["angle_b"], r["eta_eff_b_theory"], tol["eta_eff_exponent"], r["angle_b_se"]),
            meta, n_eq))
        e1 = phase_end_epochs(table)[0]
        if e1 != last_epoch(table):
            r1 = table1_network({rule: result}, epoch=e1, d_min=d_min).iloc[0]
            rows.append(_claim(
                f"{RULE_NAMES[rule]}: η_eff ∝ η^a λ^b, exponent b, secondary: angle at the end of "
                f"the first η phase (epoch {e1})", "Table 1", r1["eta_eff_b_theory"], r1["angle_b"],
                r1["angle_b_se"], f"±{tol['eta_eff_exponent']:g}; the printed table implies "
                f"{printed_b:.2f}",
                agreement(r1["angle_b"], r1["eta_eff_b_theory"], tol["eta_eff_exponent"],
                        r1["angle_b_se"]), meta, int(r1["n_equilibrium"])))
        if rule in FIGURE2_RULES:
            for label, exps in (("derived", ETA_EFF_EXPONENTS[rule]),
                                ("as printed", PRINTED_ETA_EFF_EXPONENTS[rule])):
                dc = diagonal_consistency(table, rule, exponents=exps)
                single = max(dc["r2_eta"], dc["r2_lambda"])
                ok = None if not math.isfinite(dc["r2_diagonal"]) else (
                    not math.isfinite(single) or dc["r2_diagonal"] > single)
                rows.append(_claim(
                    f"{RULE_NAMES[rule]}: test error constant where η^{exps[0]:.2g}·λ^{exps[1]:.2g} "
                    f"is ({label} η_eff); adjusted R² of the diagonal classes", "Figure 2",
                    math.nan, dc["r2_diagonal"], math.nan,
                    f"above η alone ({dc['r2_eta']:.2f}) and λ alone ({dc['r2_lambda']:.2f})",
                    ok, meta, dc["n_cells"]))
        if rule in FIGURE4_RULES:
            fit, _, per_lam = best_lr_slope(table)
            rows.append(_claim(
                f"{RULE_NAMES[rule]}: η* ∝ λ^s (η* on the validation split)", "Figure 4",
                best_lr_slope_theory(rule), fit.slope, fit.stderr,
                f"±{tol['best_lr_slope']:g}; {int(per_lam['edge'].sum())} λ with η* on the grid edge "
                "left out",
                agreement(fit.slope, best_lr_slope_theory(rule), tol["best_lr_slope"], fit.stderr),
                meta, fit.n))
    if "normalized_sgd" in results:
        table, meta = _table_and_meta(results["normalized_sgd"])
        s_norm, per_eta = lambda_sensitivity(table)
        if "sgd" in results:
            s_sgd, _ = lambda_sensitivity(_table_and_meta(results["sgd"])[0],
                                          lam_split=s_norm["lam_split"])
            ratio = (s_norm["spread_mean"] / s_sgd["spread_mean"]
                     if s_sgd["spread_mean"] and math.isfinite(s_sgd["spread_mean"]) else math.nan)
            rows.append(_claim(
                "normalised SGD: λ barely matters below the largest λ (test-error spread over λ, "
                "ratio to plain SGD)", "Figure 3", math.nan, ratio, math.nan,
                f"≤ {tol['lambda_spread_ratio']:g}",
                None if not math.isfinite(ratio) else ratio <= tol["lambda_spread_ratio"],
                meta, len(per_eta)))
        ok = None if not (math.isfinite(s_norm["excess_mean"]) and math.isfinite(s_norm["spread_mean"])) \
            else s_norm["excess_mean"] > s_norm["spread_mean"]
        rows.append(_claim(
            "normalised SGD: the largest λ raises the test error (pp above the small-λ mean)",
            "Figure 3", math.nan, 100 * s_norm["excess_mean"], math.nan,
            f"above the small-λ spread ({100 * s_norm['spread_mean']:.2f} pp)", ok, meta,
            len(per_eta)))
    order = {"Figure 1": 1, "Figure 2": 2, "Figure 3": 3, "Figure 4": 4, "Table 1": 5}
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.sort_values("figure", key=lambda f: f.map(order), kind="stable").reset_index(drop=True)
