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
# (ch-update-rules)=
# # Other update rules: Table 1, measured
#
# SGD is rarely used alone. §5 of {cite:t}`vanlaarhoven2017` asks the questions of the previous
# chapters for momentum, RMSProp, ADAM, Newton's method and for SGD that renormalises the weights
# after every step, and collects the answers in its Table 1: how the effective learning rate
# depends on ‖w‖, and how long the weights become in the steady state. This chapter derives each
# row from a single symmetry of the update rule, measures every entry on the toy unit of
# {ref}`ch-effective-lr`, and adds AdamW {cite}`loshchilov2019`, whose decoupled decay changes
# the answer.

# %% tags=["parameters"]
profile = "quick"  # smoke, quick or paper; smoke halves the number of steps
dataset = "synthetic"  # unused here: the toy unit has its own data
device = "auto"  # unused here: the toy unit runs on the CPU in float64
seed = 0  # data of the toy unit and minibatch order
optimizer = "all"  # one of sgd, momentum, nesterov, rmsprop, adam, adamw, normalized_sgd, newton, or all
steps = 8000  # minibatch steps of every toy run (smoke: 4000)
newton_steps = 20  # full-batch Newton steps

# %% tags=["remove-cell"]
from l2bn.chapter import check_parameters

check_parameters("04_update_rules", globals())  # each parameter within its accepted values, before anything runs

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown
from myst_nb import glue

from l2bn import theory
from l2bn.rules import RULES

sns.set_theme(style="whitegrid", context="notebook")
if profile == "smoke":
    steps = min(steps, 4000)
rules = tuple(RULES) if optimizer == "all" else (optimizer,)
if not set(rules) <= set(RULES):
    raise ValueError(f"optimizer: choose one of {', '.join(RULES)} or all; got {optimizer!r}")
toy = theory.make_toy(seed=seed)

# %% [markdown]
# ## One symmetry per rule
#
# Chapter {ref}`ch-effective-lr` found that SGD on a scale-invariant loss has an exact symmetry:
# the run from $\alpha\mathbf{w}_0$ with $(\eta\alpha^2, \lambda/\alpha^2)$ is the run from
# $\mathbf{w}_0$ with $(\eta, \lambda)$, magnified by α. Every rule of Table 1 has such a symmetry,
# $(\eta, \lambda) \mapsto (\eta\alpha^a, \lambda\alpha^b)$, and the exponents $(a, b)$ decide
# everything else. They follow from how each rule reacts when the gradient shrinks by α (it does,
# when $\mathbf{w}$ grows by α):
#
# * **SGD, heavy-ball and Nesterov momentum** move by η times the gradient, so the step shrinks by
#   α while it should grow by α: $a = 2$. The L2 gradient $2\lambda\mathbf{w}$ grows by α and must
#   grow by α too after multiplying by $\eta\alpha^2$: $b = -2$.
# * **RMSProp and ADAM** divide by a running root-mean-square of the gradient, which shrinks by α
#   along with it: the step no longer depends on the gradient's scale, and $a = 1$. The L2 part is
#   divided by the same running scale, so relative to the data gradient it must keep its weight:
#   $2\lambda'\alpha\mathbf{w} \cdot \alpha = 2\lambda\mathbf{w}$, $b = -2$. (ε must scale too: added
#   outside the square root, as here and in PyTorch, it must become ε/α; inside it, as the paper
#   writes RMSProp, ε/α². With ε = 10⁻⁸ this only matters for tiny gradients.)
# * **AdamW** {cite}`kosson2024` takes the decay out of the gradient: $\mathbf{w} \leftarrow (1 - 2\eta\lambda)\mathbf{w}$,
#   then an ADAM step on $\nabla L$ alone. The ADAM step needs $a = 1$, and the decay factor
#   must stay the same, so ηλ is fixed: $b = -1$.
# * **Newton's method** divides the gradient (which scales as $1/\alpha$) by the Hessian (which
#   scales as $1/\alpha^2$, chapter {ref}`ch-effective-lr`); the step grows by α by itself, and
#   $a = 0$. The penalty's Hessian $2\lambda I$ must shrink like the loss's: $b = -2$.
# * **Normalised SGD** (§5.5) rescales every unit to ‖w‖ = 1 after each SGD step. There is no
#   scale left to trade, and η_eff = η.
#
# Three consequences follow for each rule, none of which needs a model of the noise:
#
# 1. **The effective learning rate** is $\eta_\text{eff} = \eta/\|\mathbf{w}\|^a$, the learning rate
#    of the same rule acting on the unit vector $\mathbf{w}/\|\mathbf{w}\|$.
# 2. **The steady-state length.** If a steady state exists, magnifying it by α must give the
#    steady state at $(\eta\alpha^a, \lambda\alpha^b)$, where η/λ is $\alpha^{a-b}$ times larger.
#    So $\|\mathbf{w}\| = (\eta/\lambda)^{1/(a-b)} f(\cdot)$, with $f$ a function of the combination
#    that the symmetry leaves unchanged, $\eta^{-b}\lambda^{a}$: ηλ for SGD and AdamW, η²λ for
#    ADAM. The exponents 1/4, 1/3 and 1/2 are exact consequences of the symmetry; what the noise
#    model of {ref}`ch-steady-state` adds is that $f$ is nearly constant.
# 3. **The best learning rate.** For the scale-invariant weights, everything depends on (η, λ)
#    only through $\eta^{-b}\lambda^{a}$. (In the network the classifier and the normalisation's
#    γ and β are not scale-invariant and carry no such symmetry, so this holds only insofar as
#    they matter little.) Hence so a cross-validated η* moves along $\eta \propto \lambda^{a/b}$:
#    η* ∝ 1/λ for SGD, momentum and AdamW, η* ∝ 1/√λ for RMSProp and ADAM (the paper's Figure 4),
#    and η* independent of λ for Newton's method.
#
# ## Measuring it on the toy unit
#
# The toy unit (logit γ·x·w/‖w‖, noisy labels, minibatches of 32) is trained with every rule
# over a 3 × 3 grid of (η, λ) that spans two decades of η/λ, using the library's update rules
# (the steps of `l2bn.rules`, the same code that trains the network) on all 63 copies at once, for
# {glue:text}`steps:.0f` steps. The grids (each rule's `toy_grid` in `l2bn.rules`) keep each step's rotation small and
# give every copy time to reach its steady state (the drift check below verifies that it did);
# the steady-state ‖w‖ is the mean over the last quarter of the run. Newton's method runs
# alone: full batch with the exact Hessian, {glue:text}`newton_steps:.0f` steps from the optimum's
# direction, one η and three λ. Four measurements per rule:
#
# * **p**: the angle of a single step from a fresh start at $\|\mathbf{w}\| = r$, for $r$ from 1 to
#   100; its log–log slope against $r$ is $-p$ in $\eta_\text{eff} = \eta/\|\mathbf{w}\|^p$;
# * **symmetry gap**: the largest relative difference between a run and its magnified copy
#   (α = 10, 200 steps; 10 for Newton);
# * **e**: the slope of log‖w‖ against log(η/λ) at the steady state (and, separately, against
#   log η and −log λ);
# * **η_eff at the steady state**: the slopes of the steady-state angle per step against log η and
#   log λ.

# %%
glue("steps", float(steps), display=False)
glue("newton_steps", float(newton_steps), display=False)
table, runs = theory.measure_update_rules(toy, rules, steps=steps, newton_steps=newton_steps, seed=seed)
table.set_index("rule").round(4)

# %% [markdown]
# The same numbers in the layout of the paper's Table 1, theory next to measurement. The last
# column corrects the paper's: substituting its own ‖w‖ into its own η_eff gives √(ηλ) for SGD,
# not √(η/λ), and (η²λ)^{1/3} for ADAM, not (η²/λ)^{1/3}; only the corrected forms are invariant
# under the symmetries above, and only they make the paper's η* ∝ 1/λ (and 1/√λ) keep η_eff
# constant.

# %%
NAMES = {name: r.label for name, r in RULES.items()}
FRACTION = {0.0: "0", 0.25: "1/4", 1 / 3: "1/3", 0.5: "1/2", 2 / 3: "2/3", 1.0: "1"}


def frac(x):
    """1/4 for 0.25 and so on, bracketed for use as an exponent: ^(1/4)."""
    text = next((s for v, s in FRACTION.items() if abs(v - x) < 1e-9), f"{x:.3g}")
    return text if text in ("0", "1") else f"({text})"


def fmt(x, digits=3):
    return "—" if np.isnan(x) else f"{x:.{digits}f}"


lines = []
for r in table.itertuples():
    norm_theory = "→ 0" if r.rule == "newton" else "1" if r.rule == "normalized_sgd" else f"(η/λ)^{frac(r.e)}"
    eff_theory = "η" if r.p == 0 else f"(ηλ)^{frac(r.eff_eta)}" if r.eff_eta == r.eff_lam else \
        f"η^{frac(r.eff_eta)} λ^{frac(r.eff_lam)}"
    norm_measured = (f"×{r.decay_measured:.3f}/step, e = {r.e_measured:.3f}" if r.rule == "newton"
                     else f"e = {r.e_measured:.3f}")
    lines.append({
        "update rule": NAMES[r.rule], "η_eff": {0: "η", 1: "η/‖w‖", 2: "η/‖w‖²"}[r.p],
        "p measured": fmt(r.p_measured), "‖w‖ theory": norm_theory, "‖w‖ measured": norm_measured,
        "η_eff at steady state": eff_theory,
        "measured (η, λ exponents)": "—" if r.rule == "newton" else f"{r.eff_eta_measured:.3f}, {r.eff_lam_measured:.3f}",
        "η* ∝": "λ^0" if r.eta_star == 0 else f"λ^-{frac(-r.eta_star)}",
    })
Markdown(pd.DataFrame(lines).to_markdown(index=False))

# %% [markdown]
# ## The checks
#
# Some of these checks are **identities** and some are **measurements**, and it matters which.
# The exponent e of η/λ, fitted on a grid that is symmetric in log η and log λ, is fixed by the
# scale symmetry alone: on such a grid the fitted slope of SGD is 1/4 whatever the dynamics do, so
# its ±0.03 check only confirms the symmetry. So do p (±0.01), the symmetry gap (rounding) and
# Newton's decay factor 1 − η. The **separate** exponents of η and of λ, and those of the angular
# update, are measurements: they test whether the norm has really settled at every cell. They are
# registered claims (`toy-exponent-eta/…`, `toy-exponent-lambda/…` in `l2bn.claims`, tolerance
# ±0.03 fixed at commit 0680ac1) and are judged, with a bootstrap interval over the grid's cells,
# in the verdict chapter rather than asserted here. The angle exponents keep a sanity bound of
# ±0.05, and the drift limit (the last quarter's mean norm within 5 % of the quarter before; 15 %
# in the smoke profile) was set after the first runs had been seen, to cover the slowest AdamW
# copy: both are checks of this page, not claims.

# %%
drift_tol = 0.15 if profile == "smoke" else 0.05
steady = table[table.rule != "newton"].set_index("rule")
for rule, r in steady.iterrows():
    assert abs(r.e_measured - r.e) <= 0.03, (rule, r.e_measured, r.e)
    assert abs(r.eff_eta_measured - r.eff_eta) <= 0.05 and abs(r.eff_lam_measured - r.eff_lam) <= 0.05, rule
    assert r.drift < drift_tol, (rule, r.drift)
    if rule != "normalized_sgd":
        assert abs(r.p_measured - r.p) <= 0.01, (rule, r.p_measured)
        assert r.sym_gap < 1e-10, (rule, r.sym_gap)
nan = float("nan")
by_rule = table.set_index("rule")
if "newton" in rules:
    nt = by_rule.loc["newton"]
    assert abs(nt.decay_measured - nt.decay_theory) < 1e-6 and abs(nt.e_measured) <= 0.03
    assert abs(nt.p_measured) <= 0.01 and nt.sym_gap < 1e-10
glue("newton_decay", float(by_rule.decay_measured.get("newton", nan)), display=False)
glue("newton_e", float(by_rule.e_measured.get("newton", nan)), display=False)

split = steady.drop(index="normalized_sgd", errors="ignore")
split_err = np.maximum((split.e_eta - split.e).abs(), (split.e_lam - split.e).abs())
glue("e_err", float((steady.e_measured - steady.e).abs().max()), display=False)
glue("eff_err", float(np.maximum((steady.eff_eta_measured - steady.eff_eta).abs(),
                                 (steady.eff_lam_measured - steady.eff_lam).abs()).max()), display=False)
glue("split_err", float(split_err.max()), display=False)
glue("split_worst", NAMES[split_err.idxmax()] if len(split) else "none", display=False)
glue("drift_max", float(steady.drift.max()), display=False)
glue("p_err", float((table.p_measured - table.p).abs().max()), display=False)
glue("sym_max", float(table.sym_gap.max()), display=False)
for rule in RULES:  # every name the prose uses exists, also when one rule is rerun
    glue(f"e_{rule}", float(by_rule.e_measured.get(rule, nan)), display=False)

# %% [markdown]
# Over the rules with a steady state, the largest error of e is {glue:text}`e_err:.3f`, the
# largest error of an η_eff exponent {glue:text}`eff_err:.3f`, and the largest error of p
# {glue:text}`p_err:.4f`. The symmetries hold to {glue:text}`sym_max:.0e` and the late-window
# means drift by at most {glue:text}`drift_max:.1%`. Measured exponents e: SGD
# {glue:text}`e_sgd:.3f`, momentum {glue:text}`e_momentum:.3f`, Nesterov {glue:text}`e_nesterov:.3f`,
# RMSProp {glue:text}`e_rmsprop:.3f`, ADAM {glue:text}`e_adam:.3f`, AdamW {glue:text}`e_adamw:.3f`.
#
# Fitting log η and log λ separately tests the part the symmetry does not give, that the length
# depends on η/λ alone: the two exponents differ from e by at most {glue:text}`split_err:.3f`,
# the worst case being {glue:text}`split_worst`. For AdamW the split is the least clean. Its
# decay is applied before the ADAM step, and where 2ηλ is not small next to 1 − ρ₁ = 0.1 it
# removes part of the step that the momentum average is still building up, so the length also
# depends on ηλ. Newton's method has no steady state at all: from the optimum's direction its norm
# shrinks by the factor {glue:text}`newton_decay:.4f` per step (1 − η = 0.8), and the slope
# against η/λ is {glue:text}`newton_e:.1e`, since λ plays no part.

# %%
steady_rules = [r for r in rules if r != "newton"]
n_panels = len(steady_rules) + ("newton" in rules)
cols = min(4, n_panels)
fig, axes = plt.subplots((n_panels + cols - 1) // cols, cols, figsize=(3.2 * cols, 3 * ((n_panels + cols - 1) // cols)),
                         squeeze=False)
for ax, rule in zip(axes.flat, steady_rules, strict=False):
    run, r = runs[rule], table.set_index("rule").loc[rule]
    x, y = run.lr / run.l2, run.equilibrium_norm()
    ax.scatter(x, y, c=np.log10(run.lr), cmap="viridis", s=30)
    xs = np.logspace(np.log10(x.min()), np.log10(x.max()), 20)
    centre = np.exp(np.mean(np.log(y))) * (xs / np.exp(np.mean(np.log(x)))) ** r.e
    ax.plot(xs, centre, "k--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="η/λ", ylabel="steady-state ‖w‖")
    ax.set_title(f"{NAMES[rule]}: e = {r.e_measured:.3f}, theory {frac(r.e).strip('()')}", fontsize="small")
if "newton" in rules:
    ax = axes.flat[len(steady_rules)]
    run = runs["newton"]
    for m in range(run.norms.shape[1]):
        ax.plot(run.norms[:, m], label=f"λ = {run.l2[m]:g}")
    ax.plot((1 - run.lr[0]) ** np.arange(run.norms.shape[0]), "k--", lw=1, label=r"$(1-\eta)^t$")
    ax.set(yscale="log", xlabel="Newton step t", ylabel=r"$\|w_t\|$")
    ax.set_title("Newton: no steady state", fontsize="small")
    ax.legend(fontsize="x-small")
for ax in list(axes.flat)[n_panels:]:
    ax.set_visible(False)
plt.tight_layout()
plt.show()

# %% [markdown]
# Each panel shows the steady-state lengths of one rule's nine copies against η/λ, coloured by
# log η, with a dashed line of the theoretical slope. Points with the same η/λ but different η
# lie close together: that is the noise model's claim that $f$ is nearly constant.
#
# ## What the table means in practice
#
# * With SGD or momentum, the length of a normalised unit adapts to make η_eff ∝ √(ηλ): doubling
#   λ has the same effect on η_eff as doubling η. Grid searches over (η, λ) find a ridge along ηλ = const,
#   which is the paper's η* ∝ 1/λ.
# * RMSProp and ADAM are only partly insensitive: η_eff ∝ (η²λ)^{1/3}, so λ still matters, half as
#   much as η (η* ∝ 1/√λ).
# * AdamW's η_eff ∝ √(ηλ), like SGD's; the decoupled decay is again a learning-rate knob for
#   normalised units.
# * Only a rule without a scale to adapt, normalised SGD, or one that is scale-free by
#   construction, Newton's method, makes λ irrelevant to η_eff. Newton's method pays for it by
#   collapsing the norm, which is harmless for the function but leaves the Hessian ill-conditioned
#   in floating point, one reason the run above stops after {glue:text}`newton_steps:.0f` steps.
#
# ## Exercises
#
# :::{exercise}
# :label: ex-ur-adam-eps
# Derive the ADAM symmetry including ε: which ε does the magnified run need, and what happens
# to the exponent 1/3 when ε is *not* adjusted and the weights are very long?
# :::
#
# :::{solution} ex-ur-adam-eps
# :class: dropdown
# Scaling $\mathbf{w}$ by α scales the gradient by 1/α, the first moment by 1/α and the second
# moment by 1/α², so the denominator $\sqrt{\hat{\mathbf{s}}} + \epsilon$ keeps its relative form
# only if ε becomes ε/α. With a fixed ε and very long weights, $\sqrt{\hat{\mathbf{s}}}$ (which is
# $\propto 1/\|\mathbf{w}\|$) eventually falls below ε, and ADAM turns into SGD with learning rate
# η/ε: the exponent moves from 1/3 towards SGD's 1/4. Try `hp={"adam": {"eps": 1e-2}}` in
# `theory.run_toys`.
# :::
#
# :::{exercise}
# :label: ex-ur-momentum-rho
# Rerun the chapter with `-p optimizer momentum` and then with `hp={"momentum": {"rho": 0.99}}`
# in `theory.run_toys`. By what factor should the steady-state lengths change, and why does the
# exponent stay 1/4?
# :::
#
# :::{solution} ex-ur-momentum-rho
# :class: dropdown
# The steady state of momentum scales as $(\eta/((1-\rho)\lambda))^{1/4}$, so going from ρ = 0.9 to
# 0.99 lengthens the weights by $10^{1/4} \approx 1.78$. ρ is not touched by the symmetry
# $(\eta\alpha^2, \lambda/\alpha^2)$, so the exponent 1/4 does not change. Mind the runs' length:
# with ρ = 0.99 each copy needs roughly ten times longer to forget its start.
# :::
#
# :::{exercise}
# :label: ex-ur-normalized
# Why does the symmetry argument give no exponent for normalised SGD, and what does λ do
# there?
# :::
#
# :::{solution} ex-ur-normalized
# :class: dropdown
# After each step the unit is put back on the sphere, so there is no length to magnify, and the
# L2 gradient $2\lambda\mathbf{w}$ points along $\mathbf{w}$: to first order it only shrinks the
# length, which the renormalisation then undoes. λ therefore has no effect at all on the toy unit
# (measured λ exponent of the angle: close to 0 in the table). In the network, normalised SGD
# renormalises the last linear layer's rows too (`l2bn.rules`, chapter {ref}`ch-normalized-weights`),
# so λ acts only through the shrink-then-rescale step, whose effect grows with 2ηλ (the paper's
# Figure 3, where only large λ matters).
# :::
#
# :::{admonition} Run it yourself
# :class: tip
# From the repository root (the profile, data set and device are make's `PROFILE`, `DATASET`
# and `DEVICE`; the chapter's own parameters go through `ARGS`):
#
# ```bash
# make chapter NB=04_update_rules PROFILE=quick DATASET=synthetic
# make chapter NB=04_update_rules PROFILE=quick DATASET=synthetic ARGS="-p optimizer rmsprop -p steps 20000"
# ```
#
# or with papermill, from `notebooks/`:
#
# ```bash
# jupytext --to ipynb 04_update_rules.py
# papermill 04_update_rules.ipynb out.ipynb -k python3 -p profile quick -p optimizer adam
# ```
#
# Parameters that matter: `optimizer` (one rule or `all`), `steps` (longer runs settle the slow
# corners of the grids) and `seed`. The grids themselves are the records' `toy_grid` in `l2bn.rules`. The chapter
# takes about ten seconds of computation on a CPU.
# :::
