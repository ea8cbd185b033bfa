"""l2bn: the reproducible companion to "L2 Regularization versus Batch and Weight Normalization"
(van Laarhoven, 2017).

Modules follow the paper: ``scale`` (‖w‖, η_eff, the steady state), ``optim`` (the update rules of
Table 1), ``model`` (the 4-layer network, M copies at once), ``data``, ``train`` (a whole (η, λ)
grid), ``results`` (cached tables with provenance), ``bench`` (speed).
"""

__version__ = "0.1.0"
