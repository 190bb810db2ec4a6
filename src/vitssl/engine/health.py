"""Run-health checks the trainer applies to logged metrics: representation collapse.

Works on the floats the trainer already read at a log step, so it adds no host-device sync.
A method opts in by logging `teacher_entropy`, `teacher_kl_uniform` and `teacher_mutual_info`
(see `vitssl.losses.dino.teacher_statistics`); other methods are never checked.
"""

from __future__ import annotations

from vitssl.engine.logging import log

COLLAPSE_KEYS = ("teacher_entropy", "teacher_kl_uniform", "teacher_mutual_info")

ONE_PROTOTYPE = (
    "teacher collapse to one prototype: teacher entropy {entropy:.3g} nats < {limit:.3g} at step {step} "
    "(every image gets the same one-hot output): raise the teacher temperature "
    "(method.teacher_temp, method.warmup_teacher_temp), let the center follow faster "
    "(lower method.center_momentum), or lower optim.lr"
)
UNIFORM = (
    "teacher collapse to the uniform distribution: KL(batch mean || uniform) {kl:.3g} nats and mutual "
    "information {info:.3g} nats < {limit:.3g} at step {step} (per-sample entropy ~ log K: every image "
    "gets the same flat output): sharpen the teacher (lower method.teacher_temp and "
    "method.warmup_teacher_temp), or lower optim.lr"
)


class CollapseMonitor:
    """Warns once per kind when the teacher's output stops depending on the image.

    - one prototype: mean per-sample teacher entropy below `min_entropy` (DINO's sharpening
      without centering);
    - uniform: KL(batch-mean || uniform) and the sample/prototype mutual information both below
      `max_kl`, i.e. per-sample entropy within 2 * `max_kl` of log K (centering without sharpening).
    A condition must hold at `patience` consecutive log steps, so one odd batch does not warn.
    """

    def __init__(self, min_entropy: float, max_kl: float, patience: int = 1) -> None:
        self.min_entropy, self.max_kl, self.patience = min_entropy, max_kl, max(1, patience)
        self._streak = {"one_prototype": 0, "uniform": 0}
        self.warned: set[str] = set()

    def check(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Update with one log step's floats; return (and log) the warnings issued now."""
        if not all(k in metrics for k in COLLAPSE_KEYS):
            return []
        entropy, kl, info = (metrics[k] for k in COLLAPSE_KEYS)
        found = {
            "one_prototype": entropy < self.min_entropy,
            "uniform": kl < self.max_kl and info < self.max_kl,
        }
        issued = []
        for kind, now in found.items():
            self._streak[kind] = self._streak[kind] + 1 if now else 0
            if self._streak[kind] >= self.patience and kind not in self.warned:
                self.warned.add(kind)
                template = ONE_PROTOTYPE if kind == "one_prototype" else UNIFORM
                limit = self.min_entropy if kind == "one_prototype" else self.max_kl
                message = template.format(entropy=entropy, kl=kl, info=info, limit=limit, step=step)
                log.warning(message)
                issued.append(message)
        return issued
