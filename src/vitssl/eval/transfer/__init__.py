"""Transfer suites: frozen-feature logistic regression over ELEVATER's sets (EsViT's protocol,
after CLIP) and MAE-Lite's fine-tuning on six small sets; public timm weights as a start."""

from vitssl.eval.transfer.logreg import SweepResult, sweep_c, torch_logistic_regression
from vitssl.eval.transfer.registry import SETS, SUITES, Suite, TransferSet, suite_sets

__all__ = ["SETS", "SUITES", "Suite", "SweepResult", "TransferSet", "suite_sets", "sweep_c",
           "torch_logistic_regression"]
