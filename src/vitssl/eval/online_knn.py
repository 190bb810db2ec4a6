"""Online k-NN during pre-training: a cheap learning curve of the features, every N epochs.

The evaluation backbone (DINO: the teacher) embeds a labelled set's train split (the memory)
and val split (the queries) as `vitssl eval knn` does; the weighted k-NN top-1 is logged as
`knn_top1`. The training RNG streams are left untouched, so a run with online k-NN follows the
same path as one without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitssl.engine.logging import log
from vitssl.eval import knn_classify
from vitssl.eval.features import labelled_features
from vitssl.eval.pretrained import evaluation_input, normalization

if TYPE_CHECKING:  # the trainer calls this; eval/ does not import it
    from vitssl.engine.trainer import Trainer


class OnlineKNN:
    """Epoch-end callback for `Trainer.epoch_end_callbacks`; also runs after the last epoch."""

    def __init__(self, data: str, every_epochs: int, k: int = 20, image_size: int | None = None,
                 batch_size: int = 256, num_workers: int = 0, temperature: float = 0.07) -> None:
        if not data:
            raise ValueError("train.knn_every_epochs is set but train.knn_data is empty: name a labelled set "
                             "(mnist, digits, shapes, or an ImageFolder with train/ and val/)")
        if every_epochs <= 0 or k <= 0:
            raise ValueError(f"online k-NN needs train.knn_every_epochs > 0 and train.knn_k > 0, got {every_epochs}, {k}")
        self.data, self.every, self.k, self.image_size = data, every_epochs, k, image_size
        self.batch_size, self.num_workers, self.temperature = batch_size, num_workers, temperature

    def __call__(self, trainer: Trainer, epoch: int) -> dict[str, float] | None:
        done = epoch + 1
        if done % self.every and done != trainer.cfg.epochs:
            return None
        run_input = evaluation_input(trainer.config)  # the run's crop size and normalisation
        size = run_input.image_size if self.image_size is None else self.image_size
        backbone = trainer.method.evaluation_backbone()
        kw = dict(batch_size=self.batch_size, num_workers=self.num_workers, normalization=normalization(run_input))
        train_f, train_y, classes = labelled_features(backbone, self.data, "train", size, trainer.device, **kw)
        val_f, val_y, _ = labelled_features(backbone, self.data, "val", size, trainer.device, **kw)
        result = knn_classify(train_f, train_y, val_f, val_y, ks=(self.k,), temperature=self.temperature,
                              num_classes=classes)[self.k]
        log.info("epoch %d: online %d-NN top-1 %.4f on %s", done, self.k, result["top1"], self.data)
        return {"knn_top1": float(result["top1"])}
