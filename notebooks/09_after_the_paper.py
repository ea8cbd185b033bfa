# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (ch-after-the-paper)=
# # After the paper: the constants, not only the exponents
#
# The paper predicts how the equilibrium norm and the effective learning rate *scale* with η and λ.
# Later work predicts the constants as well. A normalised unit under weight decay settles into a
# *rotational equilibrium*: its norm stops changing, and from then on every step turns it through
# about the same angle, set by η and the decay alone {cite}`wan2021,kosson2024`.
# And for a scale-invariant loss, weight decay can be traded exactly for a learning rate that grows
# exponentially {cite}`li2020exponential`, and
# what should then set the outcome of training is the product ηλ {cite}`li2020reconciling`. This chapter checks those statements, first on the toy
# unit of the theory chapters, where they should hold to the percent, then on the network's grids.
#
# Notation: the literature writes the decay as PyTorch's coupled `weight_decay`, wd; our penalty
# λ‖w‖² has gradient 2λw, so **wd = 2λ**. μ is the momentum coefficient, g̃ the gradient at the
# unit-norm weight (‖g̃‖ = ‖w‖·‖∇L(w)‖ for a scale-invariant unit), and Δθ the angle between a unit's
# weights before and after a step, C the number of weights of one unit. The predictions are for
# the root-mean-square angle √E[Δθ²], which is what balancing E‖Δw‖² against the decay gives:
#
# $$
# \Delta\theta_\text{SGD, heavy ball} = \sqrt{\frac{2\eta\,\mathrm{wd}}{1+\mu}}, \qquad
# \Delta\theta_\text{AdamW} = \sqrt{2\eta\,\mathrm{wd}\,\frac{1-\beta_1}{1+\beta_1}},
# $$
#
# $$
# \|w\|^4_\text{SGD, heavy ball} = \frac{\eta\,\mathbb{E}\|\tilde g\|^2}{2\,\mathrm{wd}\,(1-\mu)}, \qquad
# \|w\|_\text{AdamW} = \sqrt{\frac{\eta\,C}{2\,\mathrm{wd}}}.
# $$
#
# For plain SGD (μ = 0) the norm formula is the noise model's fixed point of {ref}`ch-steady-state`
# with the noise written as the measured ‖g̃‖²; the new content is the angle, and its prefactor.

# %% tags=["parameters"]
profile = "quick"  # smoke, quick or paper (see l2bn.profiles)
dataset = "cifar10"  # cifar10, synthetic or npz:PATH
device = "auto"  # auto, cpu or cuda
seed = 0  # the toy unit's data, initial weights and minibatches
toy_steps = 8000  # steps of each toy run

# %% tags=["remove-cell"]
from l2bn.chapter import check_parameters

check_parameters("09_after_the_paper", globals())  # each parameter within its accepted values, before anything runs

# %% tags=["remove-output"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from l2bn import analysis, claims, figures, rotational
from l2bn.chapter import chapter_rules
from l2bn.results import sweep_results
from l2bn.rules import get_rule

rules = chapter_rules("09_after_the_paper", globals())  # SGD (Wan et al.) and Nesterov (Li & Arora)
results = sweep_results(profile, rules, dataset, device)  # the grids of Figures 1–4, from the cache

# %% [markdown]
# ## On the toy unit: the angle per step, and where the small-step form fails
#
# Each run trains the toy unit (16 weights, minibatches of 32, float64) for
# {glue:text}`toy_steps:.0f` steps and compares the last half with the prediction. The grid of ηλ
# runs from 10⁻⁴, where the formulas' small-step approximations should be exact to a fraction of a
# percent, to 0.3, where they should not.

# %%
glue("toy_steps", float(toy_steps), display=False)
glue("toy_relaxations", 4 * 1e-4 * toy_steps, display=False)  # 4ηλ per step at the smallest ηλ
products = np.array([1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3])
toy_runs = {}
for name, eta in (("sgd", 1.0), ("momentum", 0.1), ("adamw", 0.01)):
    toy_runs[name] = pd.DataFrame(rotational.toy_rotation(name, [eta] * len(products), list(products / eta),
                                                          toy_steps, seed=seed)).assign(rule=name)
toy = pd.concat(toy_runs.values(), ignore_index=True).assign(eta_lam=lambda d: d.lr * d.l2)
for name, g in toy.groupby("rule"):
    glue(f"toy_angle_{name}", float(g.angle_ratio.iloc[0]), display=False)
    glue(f"toy_norm_{name}", float(g.norm_ratio.iloc[0]), display=False)
    glue(f"toy_norm_big_{name}", float(g.norm_ratio.iloc[-1]), display=False)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
for name, g in toy.groupby("rule"):
    label = get_rule(name).label
    axes[0].plot(g.eta_lam, g.angle_ratio, "o-", label=label)
    axes[1].plot(g.eta_lam, g.norm_ratio, "o-", label=label)
for ax, what in zip(axes, ("RMS angle per step", "mean ‖w‖"), strict=True):
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("ηλ")
    ax.set_ylabel(f"{what}: measured / predicted")
axes[0].legend(fontsize="small")
fig.suptitle("Toy unit (16 weights, float64): rotational equilibrium against its prediction", fontsize="medium")
plt.tight_layout()
plt.show()

# %% [markdown]
# At ηλ = 10⁻⁴ the measured angle is {glue:text}`toy_angle_sgd:.3f` of the prediction for SGD,
# {glue:text}`toy_angle_momentum:.3f` for heavy-ball momentum (μ = 0.9) and
# {glue:text}`toy_angle_adamw:.3f` for AdamW (β₁ = 0.9); the norms are {glue:text}`toy_norm_sgd:.3f`,
# {glue:text}`toy_norm_momentum:.3f` and {glue:text}`toy_norm_adamw:.3f` of theirs. That smallest ηλ
# is the slowest to settle: the decay relaxes ‖w‖² at the rate 4ηλ per step, so the run lasts only
# {glue:text}`toy_relaxations:.1f` relaxation times there, and AdamW, whose equilibrium norm lies
# furthest from the starting ‖w‖ = 1, is the one still short of it. At ηλ = 0.3 the SGD norm is
# {glue:text}`toy_norm_big_sgd:.2f` of the small-step form (the exact fixed point carries a factor
# (1 − ηλ)^{−1/4}, {ref}`ch-steady-state`) and AdamW's {glue:text}`toy_norm_big_adamw:.2f`: Kosson
# et al.'s form needs η·wd/(1 − β₁) to be small, and that fails first.
#
# Nesterov momentum is not in the figure: the heavy-ball formula does not carry over to it. Its
# look-ahead step adds μ times the new velocity to the update, and on the toy unit it turns about
# 1.17–1.19 times faster than the heavy-ball prediction (measured while writing `l2bn.rotational`;
# exercise below). The network's Nesterov grids therefore get no rotational claim.
#
# ## Weight decay is a growing learning rate
#
# For a scale-invariant loss the L2 step w ← (1 − 2ηλ)w − η∇L(w) only shrinks the weights, and a
# shrunk weight sees a proportionally larger gradient. Undo the shrinking, w̃_t = (1 − 2ηλ)^{−t} w_t,
# and the run becomes plain SGD without L2 at the learning rate
#
# $$ \eta_t = \eta\,(1 - 2\eta\lambda)^{-(2t+1)}, \qquad t = 0, 1, \dots $$
#
# The check runs both on the same minibatches, 2000 steps at η = 0.1, λ = 0.01.

# %%
equiv = rotational.exponential_lr_equivalence(0.1, 0.01, 2000, seed=seed)
glue("exp_lr_angle", equiv["max_angle"], display=False)
glue("exp_lr_norm_ratio", equiv["norm_ratio"], display=False)
print(f"largest angle between the two runs: {equiv['max_angle']:.1e} rad; "
      f"final norm ratio (no L2 / L2): {equiv['norm_ratio']:.3g}")

# %% [markdown]
# The directions agree to {glue:text}`exp_lr_angle:.0e` rad, rounding in float64, while the no-L2
# weights have grown {glue:text}`exp_lr_norm_ratio:.3g` times longer. On a normalised network the
# two runs are the same model; weight decay is a learning-rate schedule.
#
# ## On the network: SGD at the end of the constant-η phase
#
# The network's SGD grid (the one of Figure 4) records, for each conv layer and epoch, the mean
# squared angle per step and the mean ‖g̃‖² over the layer's units. At the last epoch before η first
# drops, the cells that have lived through enough relaxation times (the criterion of Figure 1,
# computed from η, λ and the schedule alone) are compared with Wan et al.'s two predictions, one point
# per (cell, layer).

# %%
rot = claims.rotation_cells(results, "sgd")
glue("n_rot_cells", float(rot.groupby(["lr", "l2"]).ngroups), display=False)
by_layer = rot.groupby("layer")[["angle_ratio", "norm_ratio"]].agg(lambda r: float(np.exp(np.log(r).mean())))
by_layer = by_layer.reindex(range(4))  # NaN for a layer without cells at equilibrium (the smoke profile)
for i, row in by_layer.iterrows():
    glue(f"rot_angle_{i}", float(row.angle_ratio), display=False)
    glue(f"rot_norm_{i}", float(row.norm_ratio), display=False)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for i, g in rot.groupby("layer"):
    axes[0].loglog(g.predicted_angle, g.angle, "o", label=f"layer {i + 1}")
    axes[1].loglog(g.predicted_norm, g.norm, "o", label=f"layer {i + 1}")
for ax, what in zip(axes, ("RMS angle per step (rad)", "mean unit ‖w‖"), strict=True):
    lims = np.array([min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])])
    ax.plot(lims, lims, color="grey", lw=0.8)
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel(f"measured {what}")
axes[0].legend(fontsize="small")
fig.suptitle(f"SGD on the network, end of the constant-η phase ({figures.dataset_label(dataset)})",
             fontsize="medium")
plt.tight_layout()
plt.show()
glue("atp_caption", Markdown(figures.provenance_block(results, "Provenance of the network figures: data, runs, "
                                                      "commands")), display=False)
by_layer.rename(index=lambda i: f"layer {i + 1}").round(3)

# %% [markdown]
# ```{glue:md} atp_caption
# :format: myst
# ```

# %% [markdown]
# Over the {glue:text}`n_rot_cells:.0f` cells at equilibrium, the measured angle is
# {glue:text}`rot_angle_0:.2f`, {glue:text}`rot_angle_1:.2f`, {glue:text}`rot_angle_2:.2f` and
# {glue:text}`rot_angle_3:.2f` of Wan et al.'s in layers 1–4 (geometric means), and the norm
# {glue:text}`rot_norm_0:.2f`, {glue:text}`rot_norm_1:.2f`, {glue:text}`rot_norm_2:.2f` and
# {glue:text}`rot_norm_3:.2f` of the norm predicted from the measured gradient. The registry's rows
# below judge the pooled ratios with their intervals; their ±0.2 was fixed before any grid with
# these measurements had run.
#
# ## The intrinsic learning rate on the network
#
# If weight decay is a learning-rate schedule, what should matter at equilibrium is how fast that
# schedule runs: the product ηλ, which Li, Lyu and Arora call the intrinsic learning rate. For SGD
# and momentum the paper's derived η_eff ∝ √(ηλ) is constant along the same diagonals, so the two
# agree; Table 1 as printed, with λ in the denominator, would put the error on the diagonals of η/λ
# instead. The grouping test of Figure 2 compares how much of the Nesterov grid's test error each
# family of diagonals explains, and each input alone (adjusted R², which charges a grouping for its
# number of classes).

# %%
nesterov = claims.grid_cells(results, "nesterov")
ok = nesterov[~nesterov.diverged]
groupings = {"product": ("η·λ", (1, 1)), "ratio": ("η/λ", (1, -1)), "eta": ("η alone", (1, 0)),
             "lambda": ("λ alone", (0, 1))}
r2 = {}
for key, (name, e) in groupings.items():
    r2[name] = analysis.grouped_r2(ok.test_err, analysis.diagonal_classes(analysis.log_eta_eff(ok.lr, ok.l2, e)))
    glue(f"r2_{key}", r2[name], display=False)
pd.Series(r2, name="adjusted R² of the test error").round(3)

# %% [markdown]
# The test error's adjusted R² is {glue:text}`r2_product:.2f` on the diagonals of ηλ against
# {glue:text}`r2_ratio:.2f` on those of η/λ, {glue:text}`r2_eta:.2f` for η alone and
# {glue:text}`r2_lambda:.2f` for λ alone. The registry's row `intrinsic-lr/nesterov` resamples the
# test errors binomially and asks whether ηλ wins over the better of η/λ and η alone; the paper's
# own Figure 2 row (`diagonal/nesterov`, in the Figure 2 chapter) asks the same of ηλ against η alone
# and λ alone.

# %% [markdown]
# :::{admonition} What we found
# :class: important
# On the toy unit the later literature's prefactors hold to a few percent at small ηλ (SGD angle
# {glue:text}`toy_angle_sgd:.3f`, AdamW {glue:text}`toy_angle_adamw:.3f` of the prediction), and
# weight decay equals an exponential learning-rate schedule to {glue:text}`exp_lr_angle:.0e` rad.
# On the network's SGD grid the first layer turns {glue:text}`rot_angle_0:.2f` times as fast as
# Wan et al. predict and its norm is {glue:text}`rot_norm_0:.2f` of theirs. On the Nesterov grid
# the diagonals of ηλ explain the test error with adjusted R² {glue:text}`r2_product:.2f`, those of
# η/λ with {glue:text}`r2_ratio:.2f`.
# :::
#
# ## This chapter's claims in the registry
#
# The rows are records of `l2bn.claims`, registered with this chapter, before the grids that carry
# the squared angle and ‖g̃‖² had been trained. They are secondary: the paper does not make them.
# The toy rows' tolerances were set with the toy runs of `l2bn.rotational` in view, and say so.

# %%
registry = claims.chapter_rows({**results, claims.THEORY: {"seed": seed}},
                               ("rotation-", "intrinsic-lr/", "toy-rotation/", "exponential-lr"))
glue("claims_total", len(registry), display=False)
glue("claims_agree", claims.counts(registry)[claims.AGREES], display=False)
claims.readable(registry)

# %% [markdown]
# {glue:text}`claims_agree` of the {glue:text}`claims_total` claims of this chapter agree.
#
# ## Exercises
#
# :::{exercise}
# :label: ex-atp-nesterov
# Nesterov's update in velocity form is v ← μv − η∇L, w ← w + μv − η∇L. Write the displacement
# Δw = w_{t+1} − w_t in terms of the old velocity and the gradient. Why does it turn a unit faster
# than heavy-ball momentum with the same η and μ? Then measure the factor:
# `rotational.toy_rotation` refuses Nesterov, so compute √E[Δθ²] from `theory.run_toy("nesterov", ...)`
# and compare with `rotational.wan_angle(η, λ, 0.9)`.
# :::
#
# :::{solution} ex-atp-nesterov
# :class: dropdown
# Δw = μ(μv − η∇L) − η∇L = μ²v − η(1 + μ)∇L: the fresh gradient enters with weight 1 + μ instead of 1.
# At equilibrium the balance of E‖Δw‖² against the decay then gives a larger angle than the
# heavy-ball √(2η·wd/(1+μ)); on the toy unit, with μ = 0.9 and small ηλ, the measured ratio is about
# 1.17–1.19.
# :::
#
# :::{exercise}
# :label: ex-atp-longer
# Are the toy ratios limited by the length of the runs or by the formulas? Rerun the chapter with
# four times the steps, `make chapter NB=09_after_the_paper PROFILE=quick DATASET=synthetic
# ARGS="-p toy_steps 32000"`, and compare the figure's two ends.
# :::
#
# :::{solution} ex-atp-longer
# :class: dropdown
# The runs reach equilibrium within a few thousand steps at these ηλ, so more steps only average
# more of them: the ratios at small ηλ move by about the sampling noise of a percent. What stays is
# set by the formulas: AdamW's √((C − 1)/C) offset, and the large-ηλ departures of the small-step
# forms (the SGD norm's (1 − ηλ)^{−1/4}, AdamW's η·wd/(1 − β₁)).
# :::
#
# :::{exercise}
# :label: ex-atp-wd
# The literature writes `weight_decay` where this book writes 2λ. Rerun the toy comparison with the
# prediction evaluated at wd = λ instead (`rotational.wan_angle(eta, lam / 2)`). By what factor does
# the ratio move, and would the tolerance of the toy rows catch the mistake?
# :::
#
# :::{solution} ex-atp-wd
# :class: dropdown
# Halving wd divides the predicted angle by √2, so the ratio rises from about 1.00 to about 1.41,
# far outside the ±0.05 of the toy rows: the convention matters and the check catches it.
# :::
