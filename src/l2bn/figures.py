"""The figures of §6, drawn from stored sweep results (never by training).

Every function takes ``results.SweepResult`` objects (or their tables) and returns a matplotlib
figure; the numbers in it come from ``l2bn.analysis``. Conventions shared by all figures:

* heatmaps over the (η, λ) grid put λ on the horizontal axis and η on the vertical one (largest η
  at the top), both labelled as powers of ten;
* a diverged model is drawn as a grey hatched cell with a legend entry "diverged", never as a colour
  of the scale;
* the title names the dataset that produced the figure, and ``provenance_block`` writes the
  folded block that says where its numbers come from and how to recompute them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from . import analysis
from .rules import GRADIENT, UpdateRule, get_rule
from .scale import lr_schedule
from .spec import parse_grid

DIVERGED = {"facecolor": "0.82", "edgecolor": "0.35", "hatch": "xxx", "linewidth": 0.0}
DIVERGED_LABEL = "diverged"
# Collapsed cells (the norm fell by orders of magnitude, ``analysis.collapsed``) are their own
# category, so that one of them cannot stretch a logarithmic colour scale over many decades.
COLLAPSED = {"facecolor": "0.95", "edgecolor": "C3", "hatch": "///", "linewidth": 0.0}
COLLAPSED_LABEL = "collapsed (norm fell > 1000×)"
EXPONENT_TEX = {0.25: "1/4", 1 / 3: "1/3", 0.5: "1/2", 2 / 3: "2/3", -0.5: "-1/2", -1.0: "-1",
                1.0: "1", 0.0: "0", -1 / 3: "-1/3"}


# ---------------------------------------------------------------------------------------------
# Labels and captions
# ---------------------------------------------------------------------------------------------


def power_label(x: float) -> str:
    """``x`` as a power of ten in TeX: 0.01 → $10^{-2}$, 0.0316 → $10^{-1.5}$, 0.02 → $2\\times10^{-2}$."""
    if x == 0:
        return "$0$"
    e = math.log10(abs(x))
    sign = "-" if x < 0 else ""
    if abs(e - round(e)) < 1e-3:
        return f"${sign}10^{{{round(e)}}}$"
    if abs(2 * e - round(2 * e)) < 1e-2:
        return f"${sign}10^{{{round(2 * e) / 2:.1f}}}$"
    k = math.floor(e)
    return f"${sign}{abs(x) / 10**k:.2g}\\times10^{{{k}}}$"


_SUPERSCRIPT = str.maketrans("-0123456789.", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹·")


def unicode_power(x: float) -> str:
    """``x`` as a power of ten in plain text for prose: 0.01 → 10⁻², 0.0316 → 10⁻¹·⁵, 0.02 → 0.02."""
    if x <= 0:
        return f"{x:g}"
    e = math.log10(x)
    if abs(2 * e - round(2 * e)) < 1e-2:
        text = f"{round(e)}" if abs(e - round(e)) < 1e-3 else f"{round(2 * e) / 2:.1f}"
        return "10" + text.translate(_SUPERSCRIPT)
    return f"{x:g}"


NORM_LABELS = {"batch": "", "weight": ", weight norm", "layer": ", layer norm", "none": ", no norm (control)"}


def rule_of(grid: str) -> UpdateRule:
    """The update rule's record of a grid named as in a results mapping (``sgd``, ``sgd@weight``)."""
    return get_rule(parse_grid(grid)[0])


def label(grid: str) -> str:
    """The name of a grid in figures and tables: its update rule's label, and the network's
    normalisation where it is not batch normalisation ("SGD, weight norm")."""
    return rule_of(grid).label + NORM_LABELS[parse_grid(grid)[1]]


def num(x: float, fmt: str = ".2f") -> str:
    """``x`` formatted, or an em dash when it is not a finite number (nothing was measured)."""
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "—"


PLAIN = FuncFormatter(lambda v, _: f"{v:.3g}")


def plain_log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Label a logarithmic axis over [lo, hi] with plain numbers (0.5, 2, 10) rather than powers of
    ten; the minor ticks are labelled only when the range is under a decade, else they crowd.
    Ranges of three decades or more keep matplotlib's powers of ten."""
    if not (np.isfinite(lo) and np.isfinite(hi) and lo > 0) or hi >= 1000 * lo:
        return
    if hi >= 10 * lo:  # 1, 2, 5, 10, 20, …: enough labels, none crowded
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(PLAIN)
    axis.set_minor_formatter(PLAIN if hi < 10 * lo else NullFormatter())


def fraction(x: float) -> str:
    """A theory exponent as a short fraction (1/4, 1/3, −1/2) where it is one."""
    for v, s in EXPONENT_TEX.items():
        if math.isclose(x, v, abs_tol=1e-9):
            return s
    return f"{x:.3g}"


def dataset_label(name: str) -> str:
    """What a reader should be told the data is."""
    if name == "cifar10":
        return "CIFAR-10"
    if name == "synthetic":
        return "synthetic images (a stand-in, not CIFAR-10)"
    if name.startswith("npz:"):
        return f"images from {Path(name[4:]).name}"
    return name


def _as_list(results: Any) -> list[Any]:
    """The ``SweepResult`` objects in ``results``: one, a list, a dict, seed replicates in lists."""
    if isinstance(results, Mapping):
        return _as_list(list(results.values()))
    if isinstance(results, Iterable) and not hasattr(results, "provenance"):
        return [r for item in results for r in _as_list(item)]
    return [results]


def _dataset_of(results: Any) -> str:
    names = {r.provenance.get("dataset", {}).get("name", r.provenance["spec"]["dataset"])
             for r in _as_list(results)}
    return " + ".join(dataset_label(n) for n in sorted(names))


def schedule_text(epochs: int) -> str:
    """The learning-rate schedule of ``scale.lr_schedule`` in words."""
    drops = [e for e in range(1, epochs) if lr_schedule(e, epochs) != lr_schedule(e - 1, epochs)]
    if not drops:
        return f"{epochs} epochs at constant η"
    return f"{epochs} epochs, η ÷10 after epoch " + " and again after epoch ".join(map(str, drops))


def _short_commit(provenance: Mapping[str, Any]) -> str:
    commit = str(provenance.get("git_commit", "unknown"))
    head, dirty = commit.split("+", 1) if "+" in commit else (commit, "")
    return head[:12] + (f" +{dirty}" if dirty else "")


def _code_text(provenance: Mapping[str, Any]) -> str:
    """The training code's version, and the git commit when it is known."""
    commit = _short_commit(provenance)
    text = f"`{str(provenance.get('code_version', '?'))[:12]}`"
    return text if commit.startswith("unknown") else f"{text}, git `{commit}`"


def _span(values: Iterable[float]) -> str:
    """A grid in few characters: '0.01, 0.1' or '0.01 … 1 (5)'."""
    vs = list(values)
    return ", ".join(f"{v:g}" for v in vs) if len(vs) <= 3 else f"{vs[0]:g} … {vs[-1]:g} ({len(vs)})"


def _when(provenance: Mapping[str, Any]) -> str:
    """The date a result was finished, to the minute."""
    text = str(provenance.get("finished", "?")).replace("T", " ")
    return re.sub(r"(\d\d:\d\d):\d\d\+00:00$", r"\1 UTC", text)


def provenance_caption(results: Any) -> str:
    """One sentence for a caption: the data and the profile behind ``results`` (one ``SweepResult``,
    or several in a list or dict), and the convention for λ."""
    rs = _as_list(results)
    if not rs:
        return "No results."
    s = rs[0].provenance["spec"]
    return (f"**Data:** {_dataset_of(rs)}. **Profile** `{s['profile']}`: {s['n_train']} training, "
            f"{s['n_val']} validation and {s['n_test']} test images, conv widths "
            f"{'-'.join(map(str, s['widths']))}, batch {s['batch_size']}, {schedule_text(s['epochs'])}. "
            "λ is the coefficient of λ‖w‖² in the objective (PyTorch `weight_decay` = 2λ).")


def _grid_rows(rs: list[Any]) -> dict[str, list[Any]]:
    """The results grouped by grid (update rule and η, λ values); seed replicates share a row."""
    grids: dict[str, list[Any]] = {}
    for r in rs:
        s = r.provenance["spec"]
        grids.setdefault(f"{s['optimizer']} {s['lrs']} {s['l2s']}", []).append(r)
    return grids


def provenance_block(results: Any, title: str = "Where these numbers come from") -> str:
    """A folded block (a MyST ``dropdown``) with the provenance of a figure or table: the data and
    profile, then one row per grid (update rule, η and λ grids, seeds, device and time, code
    version, date, whether it came from the cache) and one command per grid that recomputes it.

    Glue it with ``glue(name, Markdown(provenance_block(results)), display=False)`` and place it
    with a ``{glue:md}`` directive (``:format: myst``), not inline: it is a block."""
    rs = _as_list(results)
    rows = ["| grid | η | λ | seeds | device, time | code version | finished |",
            "|---|---|---|---|---|---|---|"]
    commands = []
    for group in _grid_rows(rs).values():
        p, s = group[0].provenance, group[0].provenance["spec"]
        seeds = ", ".join(str(r.provenance["spec"].get("seed", "?")) for r in group)
        took = sum(r.provenance.get("wall_time_s", math.nan) for r in group)
        cached = " (cache)" if all(r.reused for r in group) else ""
        rows.append(f"| {label(s['optimizer'])} | {_span(s['lrs'])} | {_span(s['l2s'])} | {seeds} "
                    f"| {p.get('device_name', p.get('device', '?'))}, {took:.0f} s "
                    f"| {_code_text(p)} | {_when(p)}{cached} |")
        command = str(p.get("command", "?"))
        if len(group) > 1:  # one command for the replicates: the seed is the only difference
            command = re.sub(r"--seed \d+", "--seed N", command) + f"  # N = {seeds}"
        commands.append(command)
    body = "\n".join(rows) if rs else "No results."
    code = "\n".join(commands)
    return (f"::::{{dropdown}} {title}\n:class-container: provenance\n\n"
            f"{provenance_caption(rs)}\n\n{body}\n\nTo recompute a grid (one command per grid; an "
            f"identical stored result is reused unless `--force` is given):\n\n```bash\n{code}\n```\n::::\n")


# ---------------------------------------------------------------------------------------------
# Heatmaps over the (η, λ) grid
# ---------------------------------------------------------------------------------------------


def grid_heatmap(
    ax: plt.Axes,
    values: pd.DataFrame,
    diverged: pd.DataFrame | None = None,
    *,
    cbar_label: str,
    collapsed: pd.DataFrame | None = None,
    log_color: bool = False,
    cmap: str = "viridis",
    fmt: str = ".2g",
    vmin: float | None = None,
    vmax: float | None = None,
) -> plt.Axes:
    """Seaborn heatmap of an (η × λ) frame from ``analysis.grid``: λ across, η up, values annotated
    while the grid is small, diverged cells grey and hatched, collapsed cells (``collapsed``) hatched
    red and left out of the colour scale."""
    data = values.sort_index(ascending=False).sort_index(axis=1)
    if collapsed is not None:
        data = data.mask(collapsed.reindex(index=data.index, columns=data.columns).fillna(False).astype(bool))
    finite = data.to_numpy(float)[np.isfinite(data.to_numpy(float))]
    kw: dict[str, Any] = {}
    if log_color and finite.size and (finite > 0).all():
        kw["norm"] = LogNorm(vmin=vmin or finite.min(), vmax=vmax or finite.max())
    elif finite.size:
        kw.update(vmin=vmin, vmax=vmax)
    else:  # nothing to colour: a scale of its own keeps seaborn off the all-NaN minimum
        kw.update(vmin=0, vmax=1)
    small = data.size <= 64
    sns.heatmap(data, ax=ax, mask=data.isna(), cmap=cmap, annot=small, fmt=fmt,
                annot_kws={"fontsize": 7}, linewidths=0.5, linecolor="white",
                cbar=bool(finite.size), cbar_kws={"label": cbar_label}, **kw)
    if not finite.size:
        empty_note(ax)
    if "norm" in kw:
        plain_log_ticks(ax.collections[0].colorbar.ax.yaxis, finite.min(), finite.max())
    handles = []
    for cells, style, text in ((diverged, DIVERGED, DIVERGED_LABEL), (collapsed, COLLAPSED, COLLAPSED_LABEL)):
        if cells is None:
            continue
        hit = cells.reindex(index=data.index, columns=data.columns).fillna(False).to_numpy(bool)
        for i, j in zip(*np.nonzero(hit), strict=True):
            ax.add_patch(Rectangle((j, i), 1, 1, **style))
        if hit.any():
            handles.append(Patch(**style, label=text))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(-0.02, -0.1), frameon=False,
                  fontsize=8, borderaxespad=0.1, ncol=len(handles))
    ax.set_xticks(np.arange(data.shape[1]) + 0.5, [power_label(x) for x in data.columns], rotation=0)
    ax.set_yticks(np.arange(data.shape[0]) + 0.5, [power_label(x) for x in data.index], rotation=0)
    ax.set_xlabel("λ (L2 coefficient)")
    ax.set_ylabel("η (learning rate)")
    return ax


def draw_diagonals(
    ax: plt.Axes,
    lrs: Iterable[float],
    l2s: Iterable[float],
    exponents: tuple[float, float],
    max_lines: int = 9,
    **style: Any,
) -> list[float]:
    """Lines of constant η^a λ^b through the cell centres of a ``grid_heatmap`` (log-uniform grids).

    Returns the log10 η^a λ^b of the lines drawn."""
    le = np.log10(np.sort(np.asarray(list(lrs), float)))
    ll = np.log10(np.sort(np.asarray(list(l2s), float)))
    de = (le[-1] - le[0]) / (len(le) - 1) if len(le) > 1 else 1.0
    dl = (ll[-1] - ll[0]) / (len(ll) - 1) if len(ll) > 1 else 1.0
    a, b = exponents
    classes = np.unique(analysis.diagonal_classes((a * le[:, None] + b * ll[None, :]).ravel()))
    if len(classes) > max_lines:  # every k-th diagonal, evenly spaced
        classes = classes[:: math.ceil(len(classes) / max_lines)]
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    logl = np.linspace(ll[0] - dl, ll[-1] + dl, 50)
    style = {"color": "white", "lw": 1.0, "ls": "--", "alpha": 0.9, **style}
    for k in classes:
        loge = (k - b * logl) / a
        ax.plot(0.5 + (logl - ll[0]) / dl, 0.5 + (le[-1] - loge) / de, **style)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return [float(k) for k in classes]


def _diverged_handle() -> Patch:
    return Patch(**DIVERGED, label=DIVERGED_LABEL)


# ---------------------------------------------------------------------------------------------
# Degenerate grids: every model (or most) diverged
# ---------------------------------------------------------------------------------------------

ALL_DIVERGED = "nothing to show: every model diverged"


def empty_note(ax: plt.Axes, text: str = ALL_DIVERGED) -> None:
    """Write ``text`` across the middle of ``ax``: a panel with nothing to draw says why."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9,
            color="0.2", wrap=True, zorder=5,
            bbox={"facecolor": "white", "edgecolor": "0.6", "boxstyle": "round,pad=0.4"})


def log_axes(ax: plt.Axes, x: Any, y: Any, log_y: bool = True, empty: str = ALL_DIVERGED) -> bool:
    """Logarithmic axes for the points (x, y), or, when no point is finite and positive (matplotlib
    cannot log-scale nothing), linear axes without ticks and ``empty`` written across them."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & ((y > 0) | (not log_y))
    if not ok.any():
        ax.set_xticks([])
        ax.set_yticks([])
        empty_note(ax, empty)
        return False
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    return True


def degenerate_note(results: Any, mostly: float = 0.5) -> str | None:
    """One line for the page when a grid diverged wholly or mostly (more than ``mostly`` of its
    models by the last epoch): for each such update rule, how many cells diverged and which. None
    when no grid did. ``results``: one ``SweepResult``, several (list or dict) or a bare table."""
    parts = []
    for r in [results] if isinstance(results, pd.DataFrame) else _as_list(results):
        table = r if isinstance(r, pd.DataFrame) else r.table
        rows = analysis.final_rows(table)
        bad = rows[rows["diverged"].astype(bool)]
        if len(bad) <= mostly * len(rows):
            continue
        cells = [f"(η={lr:g}, λ={l2:g})" for lr, l2 in zip(bad["lr"], bad["l2"], strict=True)]
        which = "all of them" if len(bad) == len(rows) else ", ".join(cells[:6]) + (
            f" and {len(cells) - 6} more" if len(cells) > 6 else "")
        rule = table["optimizer"].iloc[0] if "optimizer" in table else r.provenance["spec"]["optimizer"]
        parts.append(f"{label(rule)}: {len(bad)} of {len(rows)} cells diverged ({which})")
    if not parts:
        return None
    return ("**Degenerate grid.** " + "; ".join(parts) + ". Diverged cells are left out of every "
            "figure and fit; a fit that has fewer than two cells left is not made.")


# ---------------------------------------------------------------------------------------------
# Figure 1: the first layer's weight norm
# ---------------------------------------------------------------------------------------------


def norm_fit_panel(ax: plt.Axes, cells: pd.DataFrame, fit: analysis.Fit, theory: float,
                   rule: str) -> plt.Axes:
    """‖W₁‖ against η/λ on log–log axes: equilibrium cells filled (and fitted), the others hollow,
    the fitted line and the theory's slope through the fitted points' centre."""
    key = "fitted" if "fitted" in cells else "equilibrium"
    eq, rest = cells[cells[key]], cells[~cells[key]]
    if "collapsed" in cells:
        rest = rest[~rest["collapsed"]]
        cells = cells[~cells["collapsed"]]
    ax.scatter(rest["eta_over_l2"], rest["norm"], facecolors="none", edgecolors="0.5", s=22,
               label="not at equilibrium (inputs: < D_min relaxation times)")
    ax.scatter(eq["eta_over_l2"], eq["norm"], color="C0", s=22, label="at equilibrium (fitted)")
    if math.isfinite(fit.slope):
        x = np.logspace(np.log10(eq["eta_over_l2"].min()), np.log10(eq["eta_over_l2"].max()), 20)
        ax.plot(x, 10**fit.intercept * x**fit.slope, color="C0",
                label=f"fit: e = {fit.slope:.3f} ± {num(fit.stderr, '.3f')}")
        cx, cy = np.log10(eq["eta_over_l2"]).mean(), np.log10(eq["norm"]).mean()
        ax.plot(x, 10 ** (cy + theory * (np.log10(x) - cx)), color="C3", ls="--",
                label=f"theory: e = {fraction(theory)}")
    if log_axes(ax, cells["eta_over_l2"], cells["norm"]):
        finite = cells["norm"][np.isfinite(cells["norm"])]
        plain_log_ticks(ax.yaxis, finite.min(), finite.max())
    ax.set_xlabel("η/λ")
    ax.set_ylabel("‖W₁‖ (first-layer norm)")
    ax.set_title(f"{label(rule)}: ‖W₁‖ ∝ (η/λ)^e", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return ax


def rotation_figure(rot: pd.DataFrame, title: str) -> plt.Figure:
    """After the paper: measured against predicted RMS angle per step and mean unit norm, one point
    per (cell, layer) of ``claims.rotation_cells``, with the line of equality."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, g in rot.groupby("layer"):
        axes[0].loglog(g.predicted_angle, g.angle, "o", label=f"layer {i + 1}")
        axes[1].loglog(g.predicted_norm, g.norm, "o", label=f"layer {i + 1}")
    for ax, what in zip(axes, ("RMS angle per step (rad)", "mean unit ‖w‖"), strict=True):
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        ax.plot([min(x0, y0), max(x1, y1)], [min(x0, y0), max(x1, y1)], color="grey", lw=0.8)
        ax.set_xlabel(f"predicted {what}")
        ax.set_ylabel(f"measured {what}")
    axes[0].legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def weight_norm_figure(results: Mapping[str, Any], d_min: float = analysis.EQUILIBRIUM_D_MIN,
                       column: str = "layer_norm_0") -> plt.Figure:
    """Figure 1: for each update rule, the first layer's norm at the end of training over the
    (η, λ) grid (heatmap, logarithmic colours) and the log–log fit of ‖W₁‖ against η/λ."""
    rules = list(results)
    fig, axes = plt.subplots(len(rules), 2, figsize=(11, 3.8 * len(rules)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.15, 1]})
    for row, rule in zip(axes, rules, strict=True):
        r = results[rule]
        grid_heatmap(row[0], analysis.grid(r.table, column), analysis.diverged_grid(r.table),
                     cbar_label="‖W₁‖ (first-layer norm)", log_color=True, cmap="magma",
                     collapsed=analysis.collapsed_grid(r.table, column=column))
        row[0].set_title(f"{label(rule)}: ‖W₁‖ after the last epoch", fontsize=10)
        fit, cells = analysis.norm_exponent(
            r.table, rule_of(rule).name, analysis.steps_per_epoch(r.provenance), column=column,
            d_min=d_min, hyper=r.provenance["spec"].get("hyper"))
        norm_fit_panel(row[1], cells, fit, rule_of(rule).norm_exponent, rule)
    fig.suptitle(f"Figure 1 — first-layer weight norm ({_dataset_of(list(results.values()))})")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 2: test error and the diagonals of constant η_eff
# ---------------------------------------------------------------------------------------------


def _eta_eff_tex(exponents: tuple[float, float]) -> str:
    a, b = exponents
    return f"η^{{{fraction(a)}}} λ^{{{fraction(b)}}}"


def test_error_figure(results: Mapping[str, Any], column: str = "test_err") -> plt.Figure:
    """Figure 2: for each rule, the test error (%) over the grid with the lines of constant
    η_eff = η^a λ^b (Table 1, derived form) dashed, and beside it the error against that η_eff."""
    rules = list(results)
    fig, axes = plt.subplots(len(rules), 2, figsize=(11, 3.8 * len(rules)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.15, 1]})
    for row, rule in zip(axes, rules, strict=True):
        r = results[rule]
        g = 100 * analysis.grid(r.table, column)
        exps = rule_of(rule).eta_eff_exponents
        grid_heatmap(row[0], g, analysis.diverged_grid(r.table), cbar_label="test error (%)",
                     cmap="viridis_r", fmt=".1f")
        draw_diagonals(row[0], g.index, g.columns, exps)
        row[0].set_title(f"{label(rule)}: test error; dashed: constant "
                         f"${_eta_eff_tex(exps)}$", fontsize=10)
        rows = analysis.final_rows(r.table)
        rows = rows[~rows["diverged"].astype(bool) & (rows["l2"] > 0)]
        x = 10 ** analysis.log_eta_eff(rows["lr"], rows["l2"], exps)
        sc = row[1].scatter(x, 100 * rows[column], c=np.log10(rows["l2"]), cmap="crest", s=25)
        cb = fig.colorbar(sc, ax=row[1])
        cb.set_label("log₁₀ λ")
        dc = analysis.diagonal_consistency(r.table, rule_of(rule).name, column)
        log_axes(row[1], x, rows[column], log_y=False)
        row[1].set_xlabel(f"${_eta_eff_tex(exps)}$  (∝ η_eff at equilibrium)")
        row[1].set_ylabel("test error (%)")
        row[1].set_title(f"adjusted R² of the error: η_eff class {num(dc['r2_diagonal'])}, "
                         f"η alone {num(dc['r2_eta'])}, λ alone {num(dc['r2_lambda'])}", fontsize=9)
        if dc["n_diverged"]:
            row[1].legend(handles=[_diverged_handle()], title=f"{dc['n_diverged']} left out",
                          fontsize=7, title_fontsize=7)
    fig.suptitle(f"Figure 2 — test error over (η, λ) ({_dataset_of(list(results.values()))})")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 3: normalised weights
# ---------------------------------------------------------------------------------------------


def lambda_lines(ax: plt.Axes, table: pd.DataFrame, title: str, column: str = "test_err",
                 lam_split: float | None = None) -> plt.Axes:
    """Test error (%) against λ, one line per η (darker for larger η); diverged points left out and
    marked by an × on the axis floor."""
    g = 100 * analysis.grid(table, column)
    div = analysis.diverged_grid(table)
    colors = sns.color_palette("rocket_r", n_colors=len(g.index) + 1)[1:]
    for color, eta in zip(colors, g.index, strict=True):
        ax.plot(g.columns, g.loc[eta], marker="o", ms=4, color=color, label=f"η = {power_label(eta)}")
    bad = [(lam, eta) for eta in div.index for lam in div.columns if div.loc[eta, lam]]
    if bad:
        ax.scatter([b[0] for b in bad], [0] * len(bad), marker="x", color="0.3", clip_on=False,
                   label=f"{DIVERGED_LABEL} ({len(bad)})", transform=ax.get_xaxis_transform())
    above = [lam for lam in g.columns if lam > (lam_split if lam_split is not None else math.inf)]
    if above:  # shade from the geometric midpoint between the small and the large λ
        ax.axvspan(math.sqrt(lam_split * min(above)), max(above) * 2, color="0.92", zorder=0,
                   label="“large” λ")
    ax.set_xscale("log")
    if not np.isfinite(g.to_numpy(float)).any():
        empty_note(ax)
    ax.set_xlabel("λ (L2 coefficient)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return ax


def normalized_weights_figure(normalized: Any, plain: Any | None = None) -> plt.Figure:
    """Figure 3: test error against λ for each η with weights renormalised after every step, and
    (when given) the same grid trained with plain SGD for contrast, on a shared error axis."""
    panels = [(normalized, "normalised SGD (‖w‖ = 1 after every step)")]
    if plain is not None:
        panels.append((plain, "plain SGD (no renormalisation)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False,
                             sharey=True)
    summary, _ = analysis.lambda_sensitivity(normalized.table)
    for ax, (r, title) in zip(axes[0], panels, strict=True):
        lambda_lines(ax, r.table, title, lam_split=summary["lam_split"])
    fig.suptitle(f"Figure 3 — test error against λ ({_dataset_of([p[0] for p in panels])})")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 4: the best learning rate against λ
# ---------------------------------------------------------------------------------------------


def best_lr_figure(results: Mapping[str, Any], column: str = "val_err") -> plt.Figure:
    """Figure 4: η* (chosen on the validation split, refined by a parabola in log η) against λ on
    log–log axes, one panel for the SGD family and one for the adaptive rules; fitted lines solid,
    the theory's slope dashed through the same centre; minima on the η grid's edge hollow."""
    gradient = [r for r in results if rule_of(r).step_degree == GRADIENT]
    adaptive = [r for r in results if rule_of(r).step_degree != GRADIENT]

    def group_title(rs: list[str]) -> str:
        slopes = [fraction(rule_of(r).best_lr_slope) for r in rs]
        theory = slopes[0] if len(set(slopes)) == 1 else ", ".join(
            f"{label(r)} {s}" for r, s in zip(rs, slopes, strict=True))
        return f"{' and '.join(map(label, rs))} (theory: slope {theory})"

    groups = [(group_title(rs), rs) for rs in (gradient, adaptive) if rs]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (title, rules) in zip(axes[0], groups, strict=True):
        shown: list[pd.DataFrame] = []
        for k, rule in enumerate(rules):
            color = f"C{k}"
            fit, _, per = analysis.best_lr_slope(results[rule].table, column)
            inner, edge = per[~per["edge"]], per[per["edge"]]
            shown += [inner[["l2", "lr_star"]], edge[["l2", "lr_grid"]].set_axis(["l2", "lr_star"], axis=1)]
            ax.scatter(inner["l2"], inner["lr_star"], color=color, s=30, zorder=3,
                       label=f"{label(rule)}: slope {num(fit.slope)} ± {num(fit.stderr)}")
            if len(edge):
                ax.scatter(edge["l2"], edge["lr_grid"], facecolors="none", edgecolors=color, s=30,
                           zorder=3, label=f"{label(rule)}: on the η grid's edge (not fitted)")
            if math.isfinite(fit.slope):
                x = np.logspace(np.log10(inner["l2"].min()), np.log10(inner["l2"].max()), 20)
                ax.plot(x, 10**fit.intercept * x**fit.slope, color=color)
                theory = rule_of(rule).best_lr_slope
                cx, cy = np.log10(inner["l2"]).mean(), np.log10(inner["lr_star"]).mean()
                ax.plot(x, 10 ** (cy + theory * (np.log10(x) - cx)), color=color, ls="--", alpha=0.7)
        ax.plot([], [], color="0.4", ls="--", label="theory slope")
        points = pd.concat(shown)
        if log_axes(ax, points["l2"], points["lr_star"]):
            plain_log_ticks(ax.yaxis, *ax.get_ylim())
        ax.set_xlabel("λ (L2 coefficient)")
        ax.set_ylabel("η* (best learning rate on the validation split)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"Figure 4 — best learning rate against λ ({_dataset_of(list(results.values()))})")
    fig.tight_layout()
    return fig
