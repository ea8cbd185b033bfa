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
# (ch-invariance)=
# # Scale invariance: what the L2 term cannot do
#
# A normalised unit forgets the length of its weight vector. This chapter checks that statement
# number by number on the book's network, for batch, weight and layer normalisation, and then
# follows its consequence for the regularised objective of {cite:t}`vanlaarhoven2017` (§2): the
# penalty λ‖w‖² can change how long the weights are, but not which function the network
# computes at the optimum.
#
# Throughout, $L_\lambda(\mathbf{w}) = L(\mathbf{w}) + \lambda\|\mathbf{w}\|^2$, as on the
# {ref}`notation` page.

# %% tags=["parameters"]
profile = "quick"  # smoke, quick or paper: this chapter does the same (small) work in all three
dataset = "synthetic"  # unused here: the checks run on random images, invariance needs no data
device = "auto"  # unused here: everything runs on the CPU in float64
seed = 0  # initial weights, random images and random scale factors
alpha_low = 1 / 3  # smallest of the random factors α that multiply the weights
alpha_high = 3.0  # largest of them

# %% tags=["remove-cell"]
from l2bn.chapter import check_parameters

check_parameters("01_invariance", globals())  # each parameter within its accepted values, before anything runs

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from myst_nb import glue

from l2bn import claims, theory

sns.set_theme(style="whitegrid", context="notebook")

# %% [markdown]
# ## Three ways to normalise a unit
#
# Take one unit with weight vector $\mathbf{w}$, a batch of inputs $X$ and a nonlinearity $g$.
# The three normalisations of the paper differ in what they divide by:
#
# $$
# y_\text{BN} = g\!\left(\gamma\,\frac{X\mathbf{w} - \mu(X\mathbf{w})}{\sigma(X\mathbf{w})} + \beta\right),
# \qquad
# y_\text{WN} = g\!\left(\gamma\,\frac{X\mathbf{w}}{\|\mathbf{w}\|} + \beta\right),
# \qquad
# y_\text{LN} = g\!\left(\gamma\,\frac{\mathbf{x}W - \mu(\mathbf{x}W)}{\sigma(\mathbf{x}W)} + \beta\right).
# $$
#
# Batch normalisation (BN) takes its mean and standard deviation over the batch, separately for
# every unit; weight normalisation (WN) divides by the unit's own norm; layer normalisation (LN)
# takes the statistics of one input over *all* units of a layer, $W$ being the layer's matrix.
# Multiply $\mathbf{w}$ by $\alpha > 0$: in BN the numerator and $\sigma$ both grow by $\alpha$, in
# WN the numerator and $\|\mathbf{w}\|$ do. So for BN and WN every unit is invariant on its own,
# $y(\alpha\mathbf{w}) = y(\mathbf{w})$, even with a different α for every unit. In LN the
# statistics mix the units, so the invariance holds only when the whole layer is scaled by one α.
#
# The check below builds the book's four-layer network (tiny widths, float64, batch statistics as
# in training) and multiplies its convolution weights by random factors α drawn log-uniformly
# between {glue:text}`alpha_low:.2f` and {glue:text}`alpha_high:.1f`, either one factor per
# unit or one per layer. It reports the largest change of any logit on a batch of random images;
# the logits themselves are of order one.

# %%
glue("alpha_low", float(alpha_low), display=False)
glue("alpha_high", float(alpha_high), display=False)
rows = [{"normalisation": norm, "scaled": per,
         "max |y(αw) − y(w)|": theory.output_change(norm, per, alpha_low, alpha_high, seed)}
        for norm in ("batch", "weight", "layer", "none") for per in ("unit", "layer")]
invariance = pd.DataFrame(rows)
for r in rows:
    glue(f"dy_{r['normalisation']}_{r['scaled']}", float(r["max |y(αw) − y(w)|"]), display=False)
invariance.style.format({"max |y(αw) − y(w)|": "{:.1e}"}).hide(axis="index")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
sns.barplot(invariance, x="normalisation", y="max |y(αw) − y(w)|", hue="scaled", ax=ax)
ax.set_yscale("log")
ax.set_ylabel("largest change of a logit")
ax.set_xlabel("normalisation after each convolution")
ax.legend(title="one α per")
plt.show()

# %% [markdown]
# The numbers sort themselves into two groups:
#
# * **Invariant.** Weight normalisation: {glue:text}`dy_weight_unit:.1e` per unit and
#   {glue:text}`dy_weight_layer:.1e` per layer, rounding error in float64. Batch normalisation:
#   {glue:text}`dy_batch_unit:.1e` per unit, {glue:text}`dy_batch_layer:.1e` per layer. Layer
#   normalisation with one α for the whole layer: {glue:text}`dy_layer_layer:.1e`.
#   BN and LN are not exact to the last digit because they divide by
#   $\sqrt{\sigma^2 + \epsilon}$ with $\epsilon = 10^{-5}$, and ε does not scale with α.
# * **Not invariant.** Layer normalisation with a different α for each unit changes the logits by
#   {glue:text}`dy_layer_unit:.2f`, and so does a network without normalisation
#   ({glue:text}`dy_none_unit:.2f` per unit, {glue:text}`dy_none_layer:.2f` per layer).
#
# The first group is what makes the rest of this book work: the L2 penalty acts on units whose
# output does not depend on their length.

# %% [markdown]
# ## The penalty and the scale trade places
#
# Write $L$ for the data term, the mean cross-entropy. With normalised units
# $L(\alpha\mathbf{w}) = L(\mathbf{w})$, and the penalty is quadratic, so
#
# $$
# L_\lambda(\alpha\mathbf{w}) = L(\mathbf{w}) + \lambda\alpha^2\|\mathbf{w}\|^2
# = L_{\lambda\alpha^2}(\mathbf{w}).
# $$
#
# Shrinking the weights by α is the same as shrinking λ by α². The check evaluates both sides on
# the batch-normalised network, with λ = 10⁻³ and the penalty over all convolution weights (the
# scale-invariant ones), for α between 0.1 and 10.

# %%
gap = theory.l2_rescaling_gap("batch", [0.1, 0.3, 3.0, 10.0], lam=1e-3, seed=seed)
glue("l2_gap", float(gap.rel_gap.max()), display=False)
gap.style.format({"rel_gap": "{:.1e}"}).hide(axis="index")

# %% [markdown]
# The two sides agree to a relative {glue:text}`l2_gap:.1e` (again limited by BN's ε, which
# matters most at α = 0.1 where the pre-activations are smallest).
#
# ## Why λ cannot choose the solution
#
# Follow one direction $\mathbf{w}$ and vary only its length. The data term is flat along the
# ray; the penalty is a parabola in α that is smallest at α → 0. So for every λ > 0:
#
# * the best point on the ray has the same data loss $L(\mathbf{w})$, whatever λ is;
# * comparing two directions, the one with the lower $L$ wins for every λ, since both can shrink
#   their penalty towards zero.
#
# The minimiser of $L_\lambda$ (in so far as it exists: the infimum is approached as α → 0) is
# therefore the minimiser of $L$, with the weights made as short as they can be. λ sets a length,
# and a normalised network does not care about length. It is not a regulariser here. The figure
# shows the ray through the network's initial weights.

# %%
alphas = np.logspace(-1, 1, 9)
ray = theory.loss_along_scale("batch", alphas, [1e-3, 1e-2, 1e-1], seed=seed)
data = ray.drop_duplicates("alpha").data_loss
glue("flat_spread", float((data.max() - data.min()) / data.mean()), display=False)

fig, ax = plt.subplots(figsize=(6, 3.5))
for lam, g in ray.groupby("l2"):
    ax.plot(g.alpha, g.penalised_loss, marker="o", label=f"$L_\\lambda$, λ = {lam:g}")
ax.plot(alphas, data, "k--", label="$L$ (data term)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("scale α of the convolution weights")
ax.set_ylabel("loss at αw")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# Over two decades of α the data term moves by a relative {glue:text}`flat_spread:.1e`; every
# curve of $L_\lambda$ decreases towards it as α shrinks. What λ *does* change is how a training
# run moves along and across these rays, which is the subject of the next chapters: the gradient
# of a scale-invariant loss grows as the weights shrink ({ref}`ch-effective-lr`), and the
# balance between that growth and the decay sets the length of the weights during training
# ({ref}`ch-steady-state`).
#
# One caveat carried through the book: the network's last linear layer is *not* followed by a
# normalisation, so its own weights are not scale-invariant. That does not make λ an ordinary
# penalty on it either: the logits are the product of the classifier's weights and the last
# layer's γ (and β), so the classifier's scale can be traded against γ₃, β₃ at no cost to the
# function (the last exercise below), and an L2 penalty on the classifier alone pushes that
# scale into the unpenalised γ. The paper leaves γ and β unregularised and so does this book; the
# classifier, γ and β are the parts of the network that break the scale symmetry the later
# chapters rely on.

# %% [markdown]
# ## This chapter's claims in the registry
#
# Each check above is a record of the claims registry (`l2bn.claims`), with its accepted region
# written there, not on this page. The table hands the registry the numbers computed above and
# shows its verdict: an exact computation's interval is its numerical precision, so *agrees* means
# the number lies inside the region with room for rounding. The thresholds are numerical precision
# (float64 and batch normalisation's ε = 10⁻⁵), written with the code that first computed them.
# The controls must change the output by more than 0.01.

# %%
computed = {"seed": seed, "l2_gap": float(gap.rel_gap.max()),
            "flat_spread": float((data.max() - data.min()) / data.mean()),
            **{f"dy_{r['normalisation']}_{r['scaled']}": r["max |y(αw) − y(w)|"] for r in rows}}
registry = claims.chapter_rows({claims.THEORY: computed}, ("invariance/", "l2-rescaling", "flat-ray"))
glue("claims_total", len(registry), display=False)
glue("claims_agree", claims.counts(registry)[claims.AGREES], display=False)
claims.readable(registry)

# %% [markdown]
# {glue:text}`claims_agree` of the {glue:text}`claims_total` registered claims of this chapter agree.

# %% [markdown]
# ## Exercises
#
# :::{exercise}
# :label: ex-inv-tiny-scale
# Make the scale factors tiny: in a new cell, compare
# `theory.output_change(norm, "unit", 1e-4, 1e-3)` for the three normalisations. Which one
# stops being invariant, and why? (Rerunning the whole chapter with such factors makes its
# checks fail, since they assume factors of order one.)
# :::
#
# :::{solution} ex-inv-tiny-scale
# :class: dropdown
# Weight normalisation stays exact. Batch and layer normalisation divide by
# $\sqrt{\sigma^2 + \epsilon}$; once $\alpha^2\sigma^2$ is comparable to $\epsilon = 10^{-5}$, the ε
# no longer vanishes against the variance and the output shrinks towards β. In practice the
# weights of a trained BN network stay far from this regime, but it is why the invariance in the
# table is good to about $10^{-5}$ and not to machine precision.
# :::
#
# :::{exercise}
# :label: ex-inv-eval-mode
# Batch normalisation in evaluation mode uses the running mean and variance stored during
# training. Is $y(\alpha\mathbf{w}) = y(\mathbf{w})$ true for a BN network in `eval()` mode?
# :::
#
# :::{solution} ex-inv-eval-mode
# :class: dropdown
# Not immediately: the stored statistics were computed at the old scale, so scaling the weights
# after training changes the evaluation output. The statistics follow the weights as soon as the
# network sees training batches again, and a network *trained* at scale αw ends with running
# statistics α (mean) and α² (variance) times larger, i.e. with the same evaluation function.
# :::
#
# :::{exercise}
# :label: ex-inv-last-gamma
# The classifier after global average pooling is not normalised. Show that the network's
# output is nevertheless invariant to multiplying the *last* BN layer's γ and β by α > 0 when
# the classifier's weights are divided by α. What does this say about regularising γ?
# :::
#
# :::{solution} ex-inv-last-gamma
# :class: dropdown
# After the last BN layer comes a ReLU, which is positively homogeneous: $g(\alpha z) = \alpha g(z)$
# for α > 0. Average pooling is linear. So multiplying γ and β by α multiplies the pooled features
# by α, and dividing the classifier's weights by α undoes it. An L2 penalty on γ can thus be traded
# against the classifier's norm; it shapes the scale of the logits, not the function computed
# inside the network (the paper's §7 makes the same remark).
# :::
#
# :::{admonition} Run it yourself
# :class: tip
# From the repository root (the profile, data set and device are make's `PROFILE`, `DATASET`
# and `DEVICE`; the chapter's own parameters go through `ARGS`):
#
# ```bash
# make chapter NB=01_invariance PROFILE=quick DATASET=synthetic
# make chapter NB=01_invariance PROFILE=quick DATASET=synthetic ARGS="-p seed 1 -p alpha_high 10"
# ```
#
# or without make, from `notebooks/`:
#
# ```bash
# jupytext --to ipynb 01_invariance.py
# papermill 01_invariance.ipynb out.ipynb -k python3 -p profile quick -p seed 1 -p alpha_high 10
# ```
#
# Parameters that matter: `alpha_low`, `alpha_high` (the range of the scale factors; the checks
# assume it stays within about 0.1 to 10, where BN's ε is negligible) and `seed`.
# The chapter runs in seconds on a CPU in every profile.
# :::
