"""Weight attribution for unlearning: which weights should an unlearning method update?

Implements the score of WAGLE (Jia et al., "WAGLE: Strategic Weight Attribution for Effective
and Modular Unlearning in Large Language Models", NeurIPS 2024; official code
OPTML-Group/WAGLE) and the baselines that paper compares against. Every score is "higher =
more worth updating"; :func:`geffect.masking.weight_mask` keeps the top ``density`` fraction.

With g_f = Σ_{x in forget} ∇R(x) and g_r = Σ_{x in retain} ∇R(x), R(x) the mean answer NLL of
one instance (:func:`geffect.losses.answer_nll`), the scores per weight j are

====================  ============================================================  =================================
method                score                                                         file
====================  ============================================================  =================================
``wagle``             |(θ_j − g_r,j / γ) · g_f,j|                                   ``geffect/attribution/wagle.py``
``snip``              |θ_j · g_f,j|  (the γ → ∞ limit of ``wagle``)                 ``geffect/attribution/snip.py``
``gradient``          |g_f,j|  (SalUn-style gradient saliency)                      ``geffect/attribution/gradient.py``
``magnitude``         |θ_j|                                                         ``geffect/attribution/magnitude.py``
``random``            U(0, 1), seeded and deterministic                             ``geffect/attribution/random.py``
``wanda``             |W_ij| · ‖X_j‖₂ for Linear weights (X_j: input feature j      ``geffect/attribution/wanda.py``
                      over all non-padding forget tokens); no other tensor scored
====================  ============================================================  =================================

``reduction="sum"`` (the default) follows the official code, which sums batch-size-1
gradients; ``"mean"`` divides g_f and g_r by their instance counts. The retain term of
``wagle`` scales as g_r/γ, so switching sum → mean is the same as multiplying γ by the number
of retain instances: γ must be chosen together with the reduction. The default γ = 1e-6 is
the value in the official configs (its argparse default is 1e-3); with summed gradients the
retain term then dominates and the score is close to |g_r · g_f| / γ.

Each method is one scorer in its own file, registered by name
(:mod:`geffect.attribution.registry`); :func:`attribute_weights` dispatches through the
registry, and :func:`register_scorer` adds a method of your own, which ``attribute_weights``,
``attribute_and_save`` and the masks then use like the built-in ones.

Cost: one forward + backward pass per calibration batch over the forget set and (``wagle``)
one over the retain set (:mod:`geffect.attribution.calibration`). The per-instance sum needs no
per-instance loop: the gradient of Σ_i R(x_i) over a padded batch equals the sum of the
per-instance gradients. Gradients are added into float32 accumulators (float64 for float64
parameters) by tensor hooks as autograd produces them, so beyond the model and the activations
at most two accumulators are alive (g_f and g_r) and ``.grad`` of the model is never touched.

Usage::

    scores = attribute_weights(model, forget_loader, retain_loader, method="wagle")
    mask = weight_mask(scores, density=0.8)       # geffect.masking

or, scoring, thresholding and writing mask + summaries in one call (what
``python -m unlearning.attribute`` runs)::

    paths = attribute_and_save(model, forget_loader, retain_loader, "masks/wagle_0.8.safetensors")
"""
# Importing the scorer modules runs their registration decorators.
from geffect.attribution import gradient, magnitude, random, snip, wagle, wanda  # noqa: F401
from geffect.attribution.attribute import attribute_and_save, attribute_weights
from geffect.attribution.calibration import accumulate_gradients
from geffect.attribution.registry import (REDUCTIONS, Scorer, ScoringContext, get_scorer, register_scorer,
                                          scorer_names, scorer_scope)
from geffect.attribution.wagle import DEFAULT_GAMMA
from geffect.attribution.wanda import linear_weights

#: The built-in methods (:func:`scorer_names` lists these and any registered since).
METHODS = ("wagle", "snip", "gradient", "magnitude", "random", "wanda")

__all__ = ["DEFAULT_GAMMA", "METHODS", "REDUCTIONS", "Scorer", "ScoringContext", "accumulate_gradients",
           "attribute_and_save", "attribute_weights", "get_scorer", "linear_weights", "register_scorer",
           "scorer_names", "scorer_scope"]
