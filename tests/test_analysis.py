"""Unit tests of l2bn.analysis on synthetic result tables whose answers are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from l2bn import analysis as A
from l2bn.rules import get_rule

LRS = [0.01, 0.1, 1.0, 10.0]
L2S = [1e-4, 1e-3, 1e-2, 1e-1]
SCALES = [1.0, 1.0, 0.1, 0.01]  # four epochs: two at η, one at η/10, one at η/100


def make_table(lrs, l2s, columns, optimizer="nesterov", scales=SCALES, diverged=()):
    """A result table in train_grid's layout; ``columns(lr, l2, epoch, scale)`` gives the measured
    values of one model at one epoch. Models listed in ``diverged`` are marked diverged."""
    rows = []
    grid = [(lr, l2) for lr in lrs for l2 in l2s]
    for e, scale in enumerate(scales, start=1):
        for m, (lr, l2) in enumerate(grid):
            row = {"optimizer": optimizer, "model": m, "lr": lr, "l2": l2, "epoch": e,
                   "lr_scale": scale, "diverged": m in diverged, "train_loss": 1.0,
                   "train_err": 0.5, "val_err": 0.5, "test_err": 0.5, "layer_norm_0": 1.0,
                   "unit_norm_0": 1.0, "eta_eff_0": lr * scale, "angle_0": 0.01}
            row.update(columns(lr, l2, e, scale))
            rows.append(row)
    return pd.DataFrame(rows)


def meta(steps=10**6, optimizer="nesterov", profile="quick"):
    adam = {"rho1": 0.9, "rho2": 0.999, "eps": 1e-8}
    hyper = {"nesterov": {"rho": 0.9}, "adam": adam, "adamw": adam}
    return {"spec": {"optimizer": optimizer, "profile": profile, "dataset": "synthetic",
                     "n_train": steps * 128, "batch_size": 128, "hyper": hyper.get(optimizer, {}),
                     "widths": (8, 16, 32, 64)},
            "steps_per_epoch": steps, "dataset": {"name": "synthetic"}}


# ---------------------------------------------------------------------------------------------
# Theory values
# ---------------------------------------------------------------------------------------------


def test_eta_eff_exponents_follow_from_norm_exponents():
    assert get_rule("sgd").eta_eff_exponents == pytest.approx((0.5, 0.5))
    assert get_rule("nesterov").eta_eff_exponents == pytest.approx((0.5, 0.5))
    assert get_rule("adam").eta_eff_exponents == pytest.approx((2 / 3, 1 / 3))
    assert get_rule("normalized_sgd").eta_eff_exponents == pytest.approx((1.0, 0.0))
    # The printed table has λ in the denominator, which contradicts η* ∝ 1/λ.
    assert get_rule("sgd").printed_eta_eff[1] < 0 < get_rule("sgd").eta_eff_exponents[1]


def test_best_lr_slope_theory():
    assert get_rule("sgd").best_lr_slope == pytest.approx(-1.0)
    assert get_rule("nesterov").best_lr_slope == pytest.approx(-1.0)
    assert get_rule("rmsprop").best_lr_slope == pytest.approx(-0.5)
    assert get_rule("adam").best_lr_slope == pytest.approx(-0.5)


# ---------------------------------------------------------------------------------------------
# Grids and fits
# ---------------------------------------------------------------------------------------------


def test_grid_orientation_and_diverged_cells():
    t = make_table(LRS, L2S, lambda lr, l2, e, s: {"test_err": lr * 1000 + l2}, diverged={5})
    g = A.grid(t, "test_err")
    assert list(g.index) == LRS and list(g.columns) == L2S
    assert g.loc[1.0, 1e-2] == pytest.approx(1000.01)
    # model 5 is (η = 0.1, λ = 1e-3): NaN in the grid, True in the diverged grid
    assert math.isnan(g.loc[0.1, 1e-3])
    d = A.diverged_grid(t)
    assert d.loc[0.1, 1e-3] and d.to_numpy().sum() == 1


def test_phase_end_epochs():
    t = make_table(LRS[:1], L2S[:1], lambda *a: {})
    assert A.phase_end_epochs(t) == [2, 3, 4]


def test_loglog_fit_exact_and_noisy():
    x = np.logspace(-2, 3, 12)
    fit = A.loglog_fit(x, 3 * x**0.37)
    assert fit.slope == pytest.approx(0.37) and fit.stderr == pytest.approx(0, abs=1e-10)
    assert fit.n == 12 and fit.r2 == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    y = x**-0.5 * 10 ** rng.normal(0, 0.1, x.size)
    fit = A.loglog_fit(x, y)
    lx, ly = np.log10(x), np.log10(y)
    coef = np.polyfit(lx, ly, 1)
    resid = ly - np.polyval(coef, lx)
    se = math.sqrt(resid @ resid / (x.size - 2) / ((lx - lx.mean()) ** 2).sum())
    assert fit.slope == pytest.approx(coef[0])
    assert fit.stderr == pytest.approx(se) and fit.stderr > 0
    assert math.isnan(A.loglog_fit([1.0], [2.0]).slope)
    assert math.isnan(A.loglog_fit([1.0, 2.0], [2.0, 3.0]).stderr)  # no degrees of freedom left


def test_power_law_fit_recovers_two_exponents():
    lr, l2 = np.meshgrid(LRS, L2S)
    pl = A.power_law_fit(lr.ravel(), l2.ravel(), 5 * lr.ravel() ** 0.5 * l2.ravel() ** 0.5)
    assert (pl.a, pl.b) == pytest.approx((0.5, 0.5))
    pl = A.power_law_fit(lr.ravel(), l2.ravel(), lr.ravel() ** (2 / 3) * l2.ravel() ** (1 / 3))
    assert (pl.a, pl.b) == pytest.approx((2 / 3, 1 / 3))


# ---------------------------------------------------------------------------------------------
# Figure 1: relaxation and the norm exponent
# ---------------------------------------------------------------------------------------------


def test_relaxation_counts_l2_shrinkage_for_momentum():
    t = make_table([0.1], [1e-3], lambda *a: {})
    d = A.relaxation(t, "nesterov", steps_per_epoch=50, hyper={"rho": 0.9})
    expected = 50 * 4 * 0.1 * 1e-3 * sum(SCALES) / (1 - 0.9)
    assert d.iloc[0] == pytest.approx(expected)
    assert A.relaxation(t, "sgd", 50).iloc[0] == pytest.approx(expected * 0.1)
    assert A.relaxation(t, "nesterov", 50, epoch=2).iloc[0] == pytest.approx(50 * 4e-4 * 2 / 0.1)


def test_relaxation_of_adaptive_rules_comes_from_the_inputs_alone():
    # Issue 11: the equilibrium criterion may not read the measured angle (which the fits use);
    # the adaptive rules' rate is 4(η_t²λ)^{1/3}, the symmetry's invariant with a unit prefactor.
    t = make_table([0.1], [1e-3], lambda lr, l2, e, s: {"angle_0": 0.1 * e})
    d = A.relaxation(t, "adam", steps_per_epoch=10, hyper={"rho1": 0.9})
    assert d.iloc[0] == pytest.approx(10 * sum(4 * ((0.1 * s) ** 2 * 1e-3) ** (1 / 3) for s in SCALES))
    t["angle_0"] *= 100
    assert A.relaxation(t, "adam", 10).iloc[0] == pytest.approx(d.iloc[0])
    assert A.relaxation(t, "rmsprop", 10).iloc[0] == pytest.approx(d.iloc[0])


@pytest.mark.parametrize("rule,exponent", [("nesterov", 0.25), ("sgd", 0.25), ("adam", 1 / 3)])
def test_norm_exponent_recovers_the_power_law(rule, exponent):
    t = make_table(LRS, L2S, lambda lr, l2, e, s: {"layer_norm_0": 2 * (lr / l2) ** exponent,
                                                   "angle_0": 0.1}, optimizer=rule)
    fit, cells = A.norm_exponent(t, rule, steps_per_epoch=10**6)
    assert cells["equilibrium"].all()
    assert fit.slope == pytest.approx(exponent) and fit.stderr == pytest.approx(0, abs=1e-9)
    assert fit.n == len(LRS) * len(L2S)


def test_norm_exponent_ignores_cells_that_have_not_relaxed():
    # Cells with small ηλ keep their initial norm (1.0), the others follow (η/λ)^{1/4}.
    def cols(lr, l2, e, s):
        return {"layer_norm_0": (lr / l2) ** 0.25 if lr * l2 >= 1e-3 else 1.0}

    t = make_table(LRS, L2S, cols)
    steps = 100  # D = 4ηλ·steps·Σscale/(1 − ρ) = 8.44e3·ηλ: ≥ 3 exactly when ηλ ≥ 1e-3 here
    fit, cells = A.norm_exponent(t, "nesterov", steps_per_epoch=steps)
    assert list(cells["equilibrium"]) == [lr * l2 >= 1e-3 for lr in LRS for l2 in L2S]
    assert fit.slope == pytest.approx(0.25)
    everything, _ = A.norm_exponent(t, "nesterov", steps_per_epoch=steps, d_min=0.0)
    assert abs(everything.slope - 0.25) > 0.05  # the criterion is what rescues the fit


def test_norm_exponent_excludes_diverged_models():
    t = make_table(LRS, L2S, lambda lr, l2, e, s: {"layer_norm_0": (lr / l2) ** 0.25},
                   diverged={0, 7, 12})
    t.loc[t["model"].isin([0, 7, 12]), "layer_norm_0"] = 1e6  # garbage that must not be fitted
    fit, cells = A.norm_exponent(t, "nesterov", steps_per_epoch=10**6)
    assert fit.n == 13 and fit.slope == pytest.approx(0.25)
    assert not cells.loc[[0, 7, 12], "equilibrium"].any()


def test_norm_exponent_secondary_filter_on_training_error():
    def cols(lr, l2, e, s):
        stuck = lr == 10.0  # these cells never learn and keep a small norm
        return {"layer_norm_0": 0.1 if stuck else (lr / l2) ** 0.25, "train_err": 0.9 if stuck else 0.3}

    t = make_table(LRS, L2S, cols)
    primary, _ = A.norm_exponent(t, "nesterov", steps_per_epoch=10**6)
    check, cells = A.norm_exponent(t, "nesterov", steps_per_epoch=10**6, max_train_err=0.8)
    assert check.slope == pytest.approx(0.25) and check.n == 12
    assert abs(primary.slope - 0.25) > 0.05
    assert list(cells["learned"]) == [lr != 10.0 for lr in LRS for _ in L2S]


# ---------------------------------------------------------------------------------------------
# Figure 2: diagonals
# ---------------------------------------------------------------------------------------------


def test_grouped_r2():
    assert A.grouped_r2([1, 1, 2, 2], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert math.isnan(A.grouped_r2([1, 2, 3], ["a", "b", "c"]))  # one cell per group
    # Groups that explain nothing: adjusted R² is negative
    assert A.grouped_r2([1, 2, 1, 2], ["a", "a", "b", "b"]) < 0


def test_diagonal_spread_is_zero_when_error_depends_only_on_eta_eff():
    def err(lr, l2, e, s):
        return {"test_err": 0.2 + 0.05 * (math.log10(lr * l2) + 3) ** 2}  # a function of √(ηλ)

    t = make_table(LRS, L2S, err)
    dc = A.diagonal_consistency(t, "nesterov")
    assert dc["r2_diagonal"] == pytest.approx(1.0)
    assert dc["within_std"] == pytest.approx(0.0, abs=1e-12)
    assert dc["between_std"] > 0
    assert dc["r2_eta"] < 0.5 and dc["r2_lambda"] < 0.5
    assert dc["n_diagonals"] == 7  # log10 ηλ ∈ {−6, …, 0}
    printed = A.diagonal_consistency(t, "nesterov", exponents=get_rule("nesterov").printed_eta_eff)
    assert printed["r2_diagonal"] < 0.5


def test_diagonals_on_rounded_half_decade_grids():
    # grids as the profiles make them: 10^{-1.5} stored as 0.0316, not 0.031623
    lrs = [0.01, 0.0316, 0.1, 0.316, 1.0]
    l2s = [0.001, 0.00316, 0.01, 0.0316, 0.1]

    def err(lr, l2, e, s):
        return {"test_err": 0.3 + 0.02 * round(2 * math.log10(lr * l2)) ** 2}

    dc = A.diagonal_consistency(make_table(lrs, l2s, err), "nesterov")
    assert dc["n_diagonals"] == 9
    assert dc["r2_diagonal"] == pytest.approx(1.0) and dc["within_std"] == pytest.approx(0, abs=1e-12)


def test_diagonal_classes_merge_near_equal_keys():
    keys = [-3.0, -3.0006, -2.5, -2.4997, -2.0]
    cls = A.diagonal_classes(keys)
    assert len(np.unique(cls)) == 3 and cls[0] == cls[1] and cls[2] == cls[3]


def test_diagonals_of_adam():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]

    def err(lr, l2, e, s):
        return {"test_err": 0.1 * abs(2 * math.log10(lr) + math.log10(l2) + 8)}

    dc = A.diagonal_consistency(make_table(lrs, L2S, err, optimizer="adam"), "adam")
    assert dc["r2_diagonal"] == pytest.approx(1.0) and dc["within_std"] == pytest.approx(0, abs=1e-12)


def test_diagonals_lose_when_error_depends_on_eta_alone():
    t = make_table(LRS, L2S, lambda lr, l2, e, s: {"test_err": 0.1 * math.log10(lr) ** 2})
    dc = A.diagonal_consistency(t, "nesterov")
    assert dc["r2_eta"] == pytest.approx(1.0)
    assert dc["r2_diagonal"] < dc["r2_eta"]


def test_diagonal_consistency_on_a_subset():
    def err(lr, l2, e, s):
        # constant along ηλ except for the row η = 0.01, which follows η alone
        return {"test_err": 0.5 if lr == 0.01 else 0.05 * math.log10(lr * l2)}

    t = make_table(LRS, L2S, err)
    rows = A.final_rows(t)
    everything = A.diagonal_consistency(t, "nesterov")
    subset = A.diagonal_consistency(t, "nesterov", where=rows["lr"] > 0.01)
    assert subset["n_cells"] == 12 and subset["r2_diagonal"] == pytest.approx(1.0)
    assert everything["r2_diagonal"] < 1.0


def test_diagonal_consistency_skips_diverged_cells():
    def err(lr, l2, e, s):
        return {"test_err": 0.05 * math.log10(lr * l2)}

    t = make_table(LRS, L2S, err, diverged={3})
    t.loc[t["model"] == 3, "test_err"] = 0.9
    dc = A.diagonal_consistency(t, "nesterov")
    assert dc["n_cells"] == 15 and dc["n_diverged"] == 1
    assert dc["r2_diagonal"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Figure 3: λ-sensitivity
# ---------------------------------------------------------------------------------------------


def test_lambda_sensitivity():
    def err(lr, l2, e, s):
        return {"test_err": 0.3 + 0.01 * math.log10(lr) + (0.2 if l2 == L2S[-1] else 0.0)}

    summary, per_eta = A.lambda_sensitivity(make_table(LRS, L2S, err))
    assert summary["lam_split"] == L2S[-2]
    assert summary["spread_mean"] == pytest.approx(0.0, abs=1e-12)
    assert summary["excess_mean"] == pytest.approx(0.2)
    assert len(per_eta) == len(LRS)

    def err2(lr, l2, e, s):
        return {"test_err": 0.3 + 0.1 * math.log10(l2)}

    summary, _ = A.lambda_sensitivity(make_table(LRS, L2S, err2))
    assert summary["spread_mean"] == pytest.approx(0.2)


def test_small_step_rise_uses_only_cells_with_small_shrink():
    def err(lr, l2, e, s):
        return {"test_err": 0.3 + 0.1 * math.log10(l2 / 1e-4)}  # rises by 0.1 per decade of λ

    rise, per_eta = A.small_step_rise(make_table(LRS, L2S, err), max_shrink=0.05)
    # η = 0.01: all four λ qualify (rise 0.3); η = 0.1: up to 0.1 (0.3); η = 1: up to 0.01 (0.2);
    # η = 10: only λ = 1e-4 and 1e-3 (0.1)
    assert list(per_eta["rise"]) == pytest.approx([0.3, 0.3, 0.2, 0.1])
    assert rise == pytest.approx(0.225)


# ---------------------------------------------------------------------------------------------
# Figure 4: the best learning rate
# ---------------------------------------------------------------------------------------------


def test_parabola_vertex():
    x = np.array([-1.0, 0.0, 1.0])
    assert A.parabola_vertex(x, (x - 0.3) ** 2) == pytest.approx(0.3)
    assert A.parabola_vertex(x, -(x**2)) is None
    assert A.parabola_vertex(x, (x - 5) ** 2) == pytest.approx(1.0)  # clipped to the bracket


@pytest.mark.parametrize("rule,slope", [("sgd", -1.0), ("adam", -0.5)])
def test_best_lr_slope_from_a_valley(rule, slope):
    lrs = list(np.logspace(-4, 2, 13))  # half decades
    l2s = [1e-4, 1e-3, 1e-2, 1e-1]

    def err(lr, l2, e, s):
        star = 1e-3 * l2**slope  # η* = c·λ^slope; a parabola in log η, so the vertex is exact
        return {"val_err": 0.1 + 0.05 * (math.log10(lr) - math.log10(star)) ** 2}

    fit, boot, per = A.best_lr_slope(make_table(lrs, l2s, err, optimizer=rule))
    assert not per["edge"].any()
    assert fit.slope == pytest.approx(slope) and fit.n == 4
    assert per["lr_star"].to_numpy() == pytest.approx([1e-3 * lam**slope for lam in l2s])
    assert boot["n_boot"] > 0 and boot["boot_lo"] <= slope <= boot["boot_hi"]


def test_best_lr_marks_and_drops_edge_minima():
    lrs = [1e-3, 1e-2, 1e-1, 1.0]

    def err(lr, l2, e, s):
        star = 1e-4 / l2  # η* = 1, 0.1, 0.01, 0.001: the first and last λ sit on the grid's edge
        return {"val_err": 0.1 + 0.05 * (math.log10(lr) - math.log10(star)) ** 2}

    t = make_table(lrs, L2S, err)
    per = A.best_lr(t)
    assert list(per["edge"]) == [True, False, False, True]
    fit, _, _ = A.best_lr_slope(t)
    assert fit.n == 2 and fit.slope == pytest.approx(-1.0)


def test_best_lr_treats_diverged_as_worst():
    lrs = [1e-3, 1e-2, 1e-1, 1.0, 10.0]

    def err(lr, l2, e, s):
        return {"val_err": 0.1 + 0.05 * (math.log10(lr) + 1) ** 2}

    t = make_table(lrs, [1e-3], err, diverged={2})  # the true minimum, η = 0.1, diverged
    t.loc[t["model"] == 2, "val_err"] = 0.0
    per = A.best_lr(t)
    assert per.loc[0, "lr_grid"] != pytest.approx(0.1)
    assert per.loc[0, "edge"]  # next to a diverged cell: not refined, not fitted


# ---------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------


def _network_like(rule, norm_exp, lrs=LRS, l2s=L2S):
    p = get_rule(rule).eta_eff_power

    def cols(lr, l2, e, s):
        norm = (lr / l2) ** norm_exp
        star = 1e-3 * l2 ** get_rule(rule).best_lr_slope
        return {"layer_norm_0": norm, "unit_norm_0": norm / 3, "eta_eff_0": math.nan,
                "angle_0": lr * s / norm**p,
                "val_err": 0.1 + 0.05 * (math.log10(lr) - math.log10(star)) ** 2,
                "test_err": 0.1 + 0.05 * (math.log10(lr) - math.log10(star)) ** 2}

    return make_table(lrs, l2s, cols, optimizer=rule), meta(optimizer=rule)


def test_table1_network_measures_the_exponents():
    lrs = list(np.logspace(-4, 2, 13))
    res = {"nesterov": _network_like("nesterov", 0.25, lrs), "adam": _network_like("adam", 1 / 3, lrs)}
    t1 = A.table1_network(res).set_index("optimizer")
    assert t1.loc["nesterov", "norm_exp"] == pytest.approx(0.25)
    assert t1.loc["adam", "norm_exp"] == pytest.approx(1 / 3)
    assert (t1.loc["nesterov", "eta_eff_a"], t1.loc["nesterov", "eta_eff_b"]) == pytest.approx((0.5, 0.5))
    assert (t1.loc["adam", "angle_a"], t1.loc["adam", "angle_b"]) == pytest.approx((2 / 3, 1 / 3))
