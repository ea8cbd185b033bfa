"""The claims registry and the decision rule, on synthetic result tables with known slopes and noise;
and the update-rule registry: a rule defined in this file alone reaches sweeps, analysis and Table 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_analysis import L2S, LRS, _network_like, make_table, meta

from l2bn import analysis, claims, rules, theory
from l2bn.claims import AGREES, DISAGREES, INCONCLUSIVE, NOT_MEASURABLE, Measurement, decide

LONG_LRS = list(np.logspace(-4, 2, 13))


def test_decision_rule_has_four_outcomes():
    region = (0.15, 0.35)
    assert decide(Measurement(0.25, 0.2, 0.3, 20), region) == AGREES
    assert decide(Measurement(0.6, 0.5, 0.7, 20), region) == DISAGREES
    assert decide(Measurement(0.3, 0.1, 0.5, 20), region) == INCONCLUSIVE
    # no interval: never "agrees", however close the value
    assert decide(Measurement(0.25, math.nan, math.nan, 20), region) == NOT_MEASURABLE
    assert decide(Measurement(0.25, 0.24, 0.26, 3), region) == NOT_MEASURABLE  # too few points


def _noisy(rule, exponent, noise, seed=0):
    """A grid whose norms follow (η/λ)^exponent with log-normal noise of width ``noise`` decades."""
    table, m = _network_like(rule, exponent, LONG_LRS)
    rng = np.random.default_rng(seed)
    last = table["epoch"] == table["epoch"].max()
    table.loc[last, "layer_norm_0"] *= 10 ** rng.normal(0, noise, last.sum())
    m = {**m, "spec": {**m["spec"], "seed": seed, "n_val": 1000, "n_test": 1000}}
    return table, m


@pytest.mark.parametrize(("exponent", "noise", "outcome"), [
    (0.25, 0.01, AGREES),  # the predicted slope, little noise
    (0.60, 0.01, DISAGREES),  # far from 1/4, little noise
    (0.32, 0.6, INCONCLUSIVE),  # near the tolerance's edge, noisy
])
def test_verdict_outcomes_on_known_slopes(exponent, noise, outcome):
    grid = {"nesterov": _noisy("nesterov", exponent, noise)}
    row = claims.verdict(grid, ["norm-exponent/nesterov"]).iloc[0]
    assert row["verdict"] == outcome, row.to_dict()
    assert row["lo"] <= row["measured"] <= row["hi"]


def test_verdict_not_measurable_without_cells():
    t = make_table([0.1], [1e-3], lambda *a: {})
    v = claims.verdict({"nesterov": (t, meta(steps=1))}, ["norm-exponent/nesterov", "best-lr/nesterov"])
    assert (v["verdict"] == NOT_MEASURABLE).all()


def test_seed_replicates_widen_the_interval():
    one = claims.verdict({"nesterov": [_noisy("nesterov", 0.25, 0.05, 0)]}, ["norm-exponent/nesterov"])
    three = claims.verdict({"nesterov": [_noisy("nesterov", 0.25, 0.05, s) for s in range(3)]},
                           ["norm-exponent/nesterov"])
    assert three.iloc[0]["seeds"] == 3 and one.iloc[0]["seeds"] == 1
    assert "seeds" in three.iloc[0]["source"]


def test_verdict_agrees_and_disagrees_on_the_network_claims():
    good = {"nesterov": _network_like("nesterov", 0.25, LONG_LRS),
            "adam": _network_like("adam", 1 / 3, LONG_LRS)}
    v = claims.verdict(good).set_index("id")
    assert v.loc["norm-exponent/nesterov", "verdict"] == AGREES
    assert v.loc["norm-exponent/adam", "verdict"] == AGREES
    assert v.loc["best-lr/nesterov", "verdict"] in (AGREES, NOT_MEASURABLE)
    bad = claims.verdict({"nesterov": _network_like("nesterov", 0.5, LONG_LRS)}, ["norm-exponent/nesterov"])
    assert bad.iloc[0]["verdict"] == DISAGREES and bad.iloc[0]["measured"] == pytest.approx(0.5)


def test_collapsed_cells_are_excluded_and_counted():
    table, m = _network_like("nesterov", 0.25, LONG_LRS)
    last = table["epoch"] == table["epoch"].max()
    stuck = table.index[last][:3]
    table.loc[stuck, "layer_norm_0"] = 1e-13  # as Nesterov at η = 1, λ = 0.1 did in the quick book
    c = claims.cell_frame((table, m), "nesterov")
    assert claims.exclusion_counts(c)["collapsed"] == 3
    row = claims.verdict({"nesterov": (table, m)}, ["norm-exponent/nesterov"]).iloc[0]
    assert row["measured"] == pytest.approx(0.25)


def test_equilibrium_is_decided_from_the_inputs_alone():
    table, m = _network_like("adam", 1 / 3, LONG_LRS)
    before = analysis.cells(table, "adam", analysis.steps_per_epoch(m))["equilibrium"]
    table["angle_0"] *= 1e6  # the measured angle must not change which cells count
    table["layer_norm_0"] *= 7.0
    after = analysis.cells(table, "adam", analysis.steps_per_epoch(m))["equilibrium"]
    assert (before == after).all()


def test_figure3_claims_compare_with_the_unprojected_rule():
    def flat(lr, l2, e, s):
        return {"test_err": 0.3 + (0.2 if l2 == L2S[-1] else 0.0)}

    def steep(lr, l2, e, s):
        return {"test_err": 0.3 + 0.05 * math.log10(l2)}

    res = {"normalized_sgd": (make_table(LRS, L2S, flat, optimizer="normalized_sgd"),
                              meta(optimizer="normalized_sgd")),
           "sgd": (make_table(LRS, L2S, steep, optimizer="sgd"), meta(optimizer="sgd"))}
    v = claims.verdict(res, ["lambda-spread/normalized_sgd", "largest-lambda/normalized_sgd"])
    assert list(v["verdict"]) == [AGREES, AGREES]


def test_every_claim_records_its_history():
    for c in claims.CLAIMS.values():
        assert c.fixed_at and c.where and c.statement
    exploratory = {c.id for c in claims.CLAIMS.values() if c.after_results}
    assert "eta-eff-exponent/adam" in exploratory and "norm-exponent/adam" not in exploratory


# ---------------------------------------------------------------------------------------------
# A new update rule, defined here and nowhere else
# ---------------------------------------------------------------------------------------------


def sgdw(w, g, state, eta, lam, t, hp):
    """SGD with decoupled decay: w ← (1 − 2ηλ)w − η∇L."""
    return w * (1 - 2 * eta * lam) - eta * g, state


@pytest.fixture
def new_rule():
    rule = rules.register(rules.UpdateRule("sgdw", "SGDW", sgdw, decay=rules.DECOUPLED, in_paper=True,
                                           figures=("4",)))
    before = dict(claims.CLAIMS)
    claims._register_rule_claims("sgdw")
    yield rule
    rules.unregister("sgdw")
    claims.CLAIMS.clear()
    claims.CLAIMS.update(before)


def test_a_new_rule_reaches_sweeps_analysis_and_table1(new_rule, make_dataset):
    from l2bn.train import SweepSpec, train_grid

    assert new_rule.symmetry == (2, -2) and new_rule.norm_exponent == pytest.approx(0.25)
    spec = SweepSpec.from_profile("smoke", "sgdw", "synthetic", n_train=64, n_val=32, n_test=32,
                                  batch_size=32, epochs=2)
    table, _ = train_grid(spec, data=make_dataset(64, 32, 32), progress=False, log=lambda *_: None)
    assert set(table["optimizer"]) == {"sgdw"} and table["layer_norm_0"].notna().all()
    toy, _ = theory.measure_update_rules(theory.make_toy(n=512), rules=["sgdw"], steps=300)
    assert toy.iloc[0]["rule"] == "sgdw" and toy.iloc[0]["e"] == pytest.approx(0.25)
    assert "best-lr/sgdw" in claims.CLAIMS and "norm-exponent/sgdw" in claims.CLAIMS
    meta_ = {"spec": spec.to_dict(), "steps_per_epoch": 2}
    v = claims.verdict({"sgdw": (table, meta_)}, ["norm-exponent/sgdw"])
    assert v.iloc[0]["verdict"] in claims.OUTCOMES


THEORY_CHECKS = ("invariance/", "l2-rescaling", "flat-ray", "gradient-scaling", "hessian-scaling",
                 "orthogonality/", "no-l2/", "rescaling-symmetry", "steady-state-formula")


def test_the_theory_chapters_checks_agree_from_the_registry_alone(one_thread):
    """Chapters 01–03 define no criterion: each of their checks is a registry record, and computed
    at the chapters' defaults (no values handed over) every one of them agrees."""
    rows = claims.chapter_rows({claims.THEORY: {}}, THEORY_CHECKS)
    assert len(rows) == 8 + 2 + 4 + 2 + 3 + 1 + 1
    assert (rows["verdict"] == AGREES).all(), rows.loc[rows["verdict"] != AGREES, ["id", "measured"]]
    controls = rows[rows["claim"].str.startswith("control")]
    assert set(controls["id"]) == {"invariance/layer-unit", "invariance/none-unit", "invariance/none-layer"}


def test_a_value_handed_over_by_a_chapter_is_judged_and_a_broken_one_disagrees():
    ok = claims.chapter_rows({claims.THEORY: {"rescale_gap": 3e-14}}, "rescaling-symmetry")
    broken = claims.chapter_rows({claims.THEORY: {"rescale_gap": 1e-3}}, "rescaling-symmetry")
    assert ok["verdict"].item() == AGREES and broken["verdict"].item() == DISAGREES
    # A control that failed to break the invariance disagrees too.
    assert claims.chapter_rows({claims.THEORY: {"dy_none_unit": 1e-9}},
                               "invariance/none-unit")["verdict"].item() == DISAGREES


def test_the_settled_angle_band_is_secondary_labelled_and_needs_four_models():
    import pandas as pd
    assert claims.CLAIMS["settled-angle/sgd"].after_results and not claims.CLAIMS["settled-angle/sgd"].primary
    assert claims.CLAIMS["steady-state"].after_results
    few = {"settling": pd.DataFrame({"angle_ratio": [0.8, 0.9]})}
    many = {"settling": pd.DataFrame({"angle_ratio": [0.7, 0.8, 0.9, 1.0]})}
    assert claims.chapter_rows(few, "settled-angle/")["verdict"].item() == NOT_MEASURABLE
    assert claims.chapter_rows(many, "settled-angle/")["verdict"].item() == AGREES


# ---------------------------------------------------------------------------------------------
# After the paper on the network: AdamW and the other normalisations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", claims.INVARIANT_NORMS)
def test_a_grid_on_another_normalisation_is_judged_under_its_own_name(norm):
    """``sgd@weight`` and ``sgd@layer`` read the SGD record (e = 1/4, the diagonals of √(ηλ)) from
    their grid names; a grid whose norms follow e = 1/2 disagrees."""
    grid = f"sgd@{norm}"
    good = claims.verdict({grid: _network_like("sgd", 0.25, LONG_LRS)},
                          [f"norm-exponent/{grid}", f"diagonal/{grid}"]).set_index("id")
    assert good.loc[f"norm-exponent/{grid}", "verdict"] == AGREES
    assert good.loc[f"norm-exponent/{grid}", "measured"] == pytest.approx(0.25)
    assert good.loc[f"diagonal/{grid}", "verdict"] in (AGREES, INCONCLUSIVE)
    bad = claims.verdict({grid: _network_like("sgd", 0.5, LONG_LRS)}, [f"norm-exponent/{grid}"])
    assert bad.iloc[0]["verdict"] == DISAGREES


@pytest.mark.parametrize(("exponent", "outcome"), [(0.25, DISAGREES), (0.6, AGREES)])
def test_the_unnormalised_control_must_depart_from_one_quarter(exponent, outcome):
    """The control claim measures |e − 1/4|: a network without normalisation that still showed the
    invariant networks' exponent would make it disagree."""
    row = claims.verdict({"sgd@none": _network_like("sgd", exponent, LONG_LRS)},
                         ["control-exponent/sgd@none"]).iloc[0]
    assert row["measured"] == pytest.approx(abs(exponent - 0.25))
    assert row["verdict"] == outcome


def test_adamw_claims_follow_from_its_record():
    """AdamW's exponent 1/2 and slope −1 come from its symmetry (decoupled decay), not from a table;
    a grid with e = 1/2 agrees, one with ADAM's 1/3 disagrees."""
    assert claims.CLAIMS["norm-exponent/adamw"].theory == pytest.approx(0.5)
    assert claims.CLAIMS["best-lr/adamw"].theory == pytest.approx(-1.0)
    good = claims.verdict({"adamw": _network_like("adamw", 0.5, LONG_LRS)}, ["norm-exponent/adamw"])
    bad = claims.verdict({"adamw": _network_like("adamw", 1 / 3, LONG_LRS)}, ["norm-exponent/adamw"])
    assert (good.iloc[0]["verdict"], bad.iloc[0]["verdict"]) == (AGREES, DISAGREES)


def test_best_lr_settled_refits_figure4_over_the_settled_optima_only():
    """A grid whose optimum follows the theory's slope: every interior optimum is settled with a
    long run and the refit gives the slope; with one step per epoch none is settled (NaN)."""
    table, m = _network_like("nesterov", 0.25, LONG_LRS)
    long = claims.best_lr_settled({"nesterov": (table, m)}, ["nesterov"]).loc["nesterov"]
    assert long["interior"] >= 3 and long["interior and settled"] == long["interior"]
    assert long["slope, settled only"] == pytest.approx(long["theory"], abs=0.05)
    short = claims.best_lr_settled({"nesterov": (table, meta(steps=1))}, ["nesterov"]).loc["nesterov"]
    assert short["interior and settled"] == 0 and math.isnan(short["slope, settled only"])
