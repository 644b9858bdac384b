"""The metrics where users import them from: ``from clevr_remv import metrics``.

They live in :mod:`clevr_remv.tools.metrics` (beside ``evaluate``, which reports them).
"""

from .tools.metrics import (  # noqa: F401
    THRESHOLDS,
    intersection_union,
    iou,
    mean_iou,
    multi_view_robustness,
    overall_iou,
    precision_at,
    summary,
)
