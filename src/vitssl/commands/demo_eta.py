"""The demos' early estimate of the time left, from their own first steps on this machine."""

from __future__ import annotations

import time
from typing import Any

from vitssl.commands.summary import duration
from vitssl.engine.logging import log

FIRST_STEPS = 10  # timed after the first step (which pays for worker start-up and warm-up)


class RemainingTime:
    """A Trainer step callback: after FIRST_STEPS steps past the first, log how long the rest of
    pre-training and the closing evaluation (`evaluation_s`, as long as the opening one took)
    should take at the pace measured so far."""

    def __init__(self, evaluation_s: float, first_steps: int = FIRST_STEPS) -> None:
        self.evaluation_s, self.first_steps = evaluation_s, first_steps
        self.start: tuple[int, float] | None = None
        self.message: str | None = None

    def __call__(self, trainer: Any) -> None:
        if self.message is not None:
            return
        now = time.perf_counter()
        if self.start is None:
            self.start = (trainer.step, now)
            return
        steps = trainer.step - self.start[0]
        if steps < self.first_steps:
            return
        per_step = (now - self.start[1]) / steps
        left = per_step * (trainer.total_steps - trainer.step) + self.evaluation_s
        self.message = (f"estimate: about {duration(left)} left ({per_step:.2f} s per step on this machine, "
                        f"{trainer.total_steps - trainer.step} steps and the final evaluation to go)")
        log.info(self.message)
