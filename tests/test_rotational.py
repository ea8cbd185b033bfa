"""``l2bn.rotational``: the later literature's equilibrium predictions, on the toy unit.

The closed forms are checked against values worked out by hand and against the §4 noise model; the
toy unit then measures the equilibrium angle and norm of SGD, heavy-ball momentum and AdamW against
them, and the Li–Arora equivalence is checked to rounding error, with wrong schedules as the
negative control.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2bn import rotational as rot
from l2bn.errors import ParameterError
from l2bn.scale import equilibrium_norm
from l2bn.theory import equilibrium_angle

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 8000  # ≥ 8/(4ηλ) steps for the smallest ηλ below: the norm has settled before the window

# One run per rule, every (η, λ) as a copy of the same run. The first copies have small ηλ, where
# the formulas should hold; the last copy of SGD and AdamW has a large ηλ, where they should not.
GRIDS = {
    "sgd": ([0.1, 0.1, 1.0], [1e-3, 1e-2, 0.3]),
    "momentum": ([0.1, 0.1], [1e-3, 1e-2]),
    "adamw": ([0.01, 0.01, 0.03], [0.03, 0.1, 1.0]),
}
SMALL = {"sgd": slice(0, 2), "momentum": slice(0, 2), "adamw": slice(0, 2)}
# Relative tolerance on measured/predicted at small ηλ. SGD and momentum measure within 1.5% on the
# toy (the O(ηλ) corrections are below 1%, the sampling error of a 4000-step window about 1%), so
# 5% leaves room for both and still fails for a wrong factor such as 1 + μ or √2. AdamW gets 10%:
# on a 16-weight unit its angle is below Kosson et al.'s by about √(15/16) (the gradient has no
# component along w), 3%, and the norm relies on Adam's moment estimates having settled.
TOL = {"sgd": 0.05, "momentum": 0.05, "adamw": 0.10}


@pytest.fixture(scope="module")
def rotation():
    return {rule: rot.toy_rotation(rule, np.array(lrs), np.array(l2s), STEPS)
            for rule, (lrs, l2s) in GRIDS.items()}


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


def test_closed_forms_match_hand_values():
    # η = 0.1, λ = 1e-3: wd = 2e-3 and 2η·wd = 4e-4.
    assert rot.wan_angle(0.1, 1e-3) == pytest.approx(0.02, rel=1e-12)
    assert rot.wan_angle(0.1, 1e-3, momentum=0.9) == pytest.approx(math.sqrt(4e-4 / 1.9), rel=1e-12)
    # η = 0.01, λ = 0.1, β₁ = 0.9: 2η·wd = 4e-3, times 0.1/1.9.
    assert rot.kosson_adamw_angle(0.01, 0.1, 0.9) == pytest.approx(math.sqrt(4e-4 / 1.9), rel=1e-12)
    assert rot.kosson_adamw_angle(0.01, 0.1, 0.0) == pytest.approx(math.sqrt(4e-3), rel=1e-12)
    # E‖g̃‖² = 2: ‖w‖⁴ = 0.1·2/(2·2e-3) = 50, and 500 with μ = 0.9.
    assert rot.wan_norm(0.1, 1e-3, 2.0) == pytest.approx(50**0.25, rel=1e-12)
    assert rot.wan_norm(0.1, 1e-3, 2.0, momentum=0.9) == pytest.approx(500**0.25, rel=1e-12)
    # C = 16: ‖w‖² = 0.01·16/(2·0.2) = 0.4.
    assert rot.kosson_adamw_norm(0.01, 0.1, 16) == pytest.approx(math.sqrt(0.4), rel=1e-12)
    lams = np.array([1e-4, 1e-3, 1e-2])
    assert np.allclose(rot.wan_angle(0.1, lams), 2 * np.sqrt(0.1 * lams), rtol=1e-12, atol=0)


def test_sgd_forms_are_the_small_step_limit_of_the_exact_ones():
    eta = 0.5
    lams = np.array([1e-8, 1e-4, 1e-2, 0.1])
    # The exact angle of a norm-preserving SGD step is arccos(1 − 2ηλ), Wan's its first order.
    gap = np.abs(rot.wan_angle(eta, lams) / equilibrium_angle(eta, lams) - 1)
    assert gap[0] < 1e-7 and np.all(np.diff(gap) > 0)
    # §4's noise model has E‖g̃‖² = γ²σ²/2, and its exact norm exceeds Wan's by (1 − ηλ)^{−1/4}.
    ratio = rot.wan_norm(eta, lams, 0.5) / equilibrium_norm(eta, lams)
    assert np.allclose(ratio, (1 - eta * lams) ** 0.25, rtol=1e-12, atol=0)


def test_rules_without_a_prediction_are_refused():
    with pytest.raises(ParameterError, match="rule: no rotational prediction for 'nesterov'"):
        rot.toy_rotation("nesterov", 0.1, 1e-3, 10)


# ---------------------------------------------------------------------------------------------
# The toy unit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", list(GRIDS))
def test_toy_unit_reaches_the_predicted_equilibrium(rotation, rule):
    res = {k: v[SMALL[rule]] for k, v in rotation[rule].items()}
    assert np.all(res["drift"] < 0.03)  # at equilibrium: the window's two halves agree
    assert np.allclose(res["angle_ratio"], 1, rtol=0, atol=TOL[rule])
    assert np.allclose(res["norm_ratio"], 1, rtol=0, atol=TOL[rule])
    # The formulas predict the root-mean-square angle; the plain mean is smaller.
    assert np.all(res["angle"] < res["angle_rms"])


def test_momentum_formula_takes_the_velocity_form_learning_rate(rotation):
    # With η/(1 − μ) in place of η the prediction would be √10 times larger: the measured ratio of
    # ~1 says Wan et al.'s η is the one of v ← μv − η∇L_λ (torch's lr), as ``rules.momentum`` uses.
    res = rotation["momentum"]
    assert np.all(np.abs(res["angle_ratio"] - 1) < TOL["momentum"])
    assert np.all(np.abs(res["angle_ratio"] * math.sqrt(0.1) - 1) > 0.5)


def test_small_step_forms_fail_at_large_eta_lambda(rotation):
    # SGD at ηλ = 0.3: the norm's missing factor (1 − ηλ)^{−1/4} ≈ 1.09 takes it out of tolerance.
    assert rotation["sgd"]["norm_ratio"][-1] > 1 + TOL["sgd"]
    # AdamW at ηλ = 0.03 (η·wd/(1 − β₁) = 0.6): the decay is no longer slow on the momentum's time
    # scale, and the norm falls well below Kosson et al.'s.
    assert rotation["adamw"]["norm_ratio"][-1] < 1 - 2 * TOL["adamw"]


# ---------------------------------------------------------------------------------------------
# Li & Arora 2019
# ---------------------------------------------------------------------------------------------


def test_exponential_lr_values():
    c = 1 - 2 * 0.1 * 0.01
    assert rot.exponential_lr(0.1, 0.01, 0) == pytest.approx(0.1 / c, rel=1e-14)
    assert rot.exponential_lr(0.1, 0.01, 2) == pytest.approx(0.1 / c**5, rel=1e-14)


@pytest.mark.parametrize("eta, lam", [(0.1, 0.01), (1.0, 0.01)])
def test_l2_is_an_exponentially_growing_learning_rate(eta, lam):
    steps = 1500
    res = rot.exponential_lr_equivalence(eta, lam, steps)
    assert res["max_angle"] < 1e-9
    assert res["max_norm_gap"] < 1e-9
    assert res["norm_ratio"] == pytest.approx((1 - 2 * eta * lam) ** -steps, rel=1e-9)


@pytest.mark.parametrize("shift", [-1, 1])
def test_equivalence_breaks_with_the_exponent_off_by_one(shift):
    # η·c^{−2t} (or c^{−(2t+2)}) is the right schedule times a constant c^{±1}: a different run.
    def wrong(eta, lam, t):
        return eta * (1 - 2 * eta * lam) ** (-(2 * t + 1 + shift))

    res = rot.exponential_lr_equivalence(0.1, 0.01, 1500, schedule=wrong)
    assert res["max_angle"] > 1e-4


@pytest.mark.parametrize(("factor", "outcome"), [(1.0, "agrees"), (1.5, "disagrees")])
def test_the_network_rotation_claims_read_the_predictions_off_a_result_table(factor, outcome):
    """A table whose RMS angles are ``factor`` × Wan et al.'s and whose norms equal the norm predicted
    from its own ‖g̃‖²: the angle claim agrees or disagrees with it, the norm claim agrees."""
    from test_analysis import make_table, meta

    from l2bn import claims

    def cols(lr, l2, epoch, scale):
        out = {}
        for i in range(4):
            grad_sq = 2.0**4 * 2 * rot.weight_decay(l2) / (lr * scale)  # so that wan_norm = 2
            out |= {f"unit_norm_{i}": 2.0, f"grad_sq_{i}": grad_sq,
                    f"angle_sq_{i}": (factor * rot.wan_angle(lr * scale, l2)) ** 2}
        return out

    table = make_table([0.1, 0.3, 1.0], [1e-3, 1e-2], cols, optimizer="sgd")
    rows = claims.chapter_rows({"sgd": (table, meta(optimizer="sgd"))}, "rotation-").set_index("id")
    assert rows.loc["rotation-angle/sgd", "verdict"] == outcome
    assert rows.loc["rotation-angle/sgd", "measured"] == pytest.approx(factor)
    assert rows.loc["rotation-norm/sgd", "verdict"] == "agrees"


@pytest.mark.parametrize(("factor", "outcome"), [(1.0, "agrees"), (0.5, "disagrees")])
def test_adamw_rotation_claims_use_each_layers_unit_size(factor, outcome):
    """Kosson et al.'s AdamW norm √(η·C/(2·wd)) takes C from the layer: 27 weights in layer 1, then
    9 × the previous width. A table with exactly those norms (× ``factor``) and angles agrees or
    disagrees."""
    from test_analysis import make_table, meta

    from l2bn import claims

    widths = (8, 16, 32, 64)
    assert rot.unit_sizes(widths) == [27, 72, 144, 288]

    def cols(lr, l2, epoch, scale):
        out = {}
        for i, c in enumerate(rot.unit_sizes(widths)):
            out |= {f"unit_norm_{i}": factor * rot.kosson_adamw_norm(lr * scale, l2, c), f"grad_sq_{i}": 1.0,
                    f"angle_sq_{i}": rot.kosson_adamw_angle(lr * scale, l2, 0.9) ** 2}
        return out

    table = make_table([0.01, 0.03, 0.1], [1.0, 3.0], cols, optimizer="adamw")
    rows = claims.chapter_rows({"adamw": (table, meta(optimizer="adamw"))}, "rotation-").set_index("id")
    assert rows.loc["rotation-norm/adamw", "verdict"] == outcome
    assert rows.loc["rotation-norm/adamw", "measured"] == pytest.approx(factor)
    assert rows.loc["rotation-angle/adamw", "verdict"] == "agrees"


@pytest.mark.parametrize(("factor", "outcome"), [(1.0, "agrees"), (2.0, "disagrees")])
def test_the_layer_norm_network_is_judged_on_the_whole_layers_angle(factor, outcome):
    """Under layer normalisation the scale-invariant vector is the whole layer: the claim reads the
    layer's angle, not the units' (which here are off by a factor 3 and must not matter)."""
    from test_analysis import make_table, meta

    from l2bn import claims

    def cols(lr, l2, epoch, scale):
        out = {}
        for i in range(4):
            angle = rot.wan_angle(lr * scale, l2)
            out |= {f"layer_angle_sq_{i}": (factor * angle) ** 2, f"angle_sq_{i}": (3 * angle) ** 2,
                    f"layer_norm_{i}": 2.0, f"unit_norm_{i}": 1.0, f"grad_sq_{i}": 1.0}
        return out

    table = make_table([0.1, 0.3, 1.0], [1e-3, 1e-2], cols, optimizer="sgd")
    row = claims.verdict({"sgd@layer": (table, meta(optimizer="sgd"))},
                         ["rotation-layer-angle/sgd@layer"]).iloc[0]
    assert row["measured"] == pytest.approx(factor)
    assert row["verdict"] == outcome
