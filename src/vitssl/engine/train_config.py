"""`TrainConfig`, the `train:` section of a run's config, apart from the trainer that runs it.

Loading a config (`vitssl.config`) needs this dataclass but not the training loop, data
loading or augmentation behind it, so it lives in a module that imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """How to run: length, batch, precision, device, logging and checkpoint cadence."""

    epochs: int = 100
    batch_size: int = 64
    accum_steps: int = 1
    num_workers: int | None = None  # None: 8, capped at the CPU cores this process may use
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_steps_per_epoch: int = 0
    log_every: int = 10
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 15.0
    save_every_epochs: int = 20
    keep_checkpoints: int = 2  # rolling checkpoint-stepNNNNNNN.pt files kept beside checkpoint.pt
    max_nonfinite_steps: int = 5  # consecutive NaN/Inf loss or gradient steps skipped before stopping
    collapse_min_entropy: float = 0.05  # nats: teacher entropy below this warns of one-prototype collapse
    collapse_max_kl: float = 0.05  # nats: KL(mean||uniform) and mutual info below this warn of uniform collapse
    collapse_patience: int = 2  # consecutive log steps a collapse condition must hold before the warning
    # "cpu": workers run the method's augmentation; "device": workers only decode and the
    # method's device_transform() augments the batch on the accelerator (DINO family, MAE)
    augment_on: str = "cpu"
    # with augment_on=device: "cpu" = workers decode every image; "device" = workers read JPEG
    # bytes and the step decodes them in one batched call on the accelerator (nvJPEG on CUDA)
    decode_on: str = "cpu"
    tensorboard: bool = True
    wandb: bool = False  # also log to Weights & Biases (pip install wandb); project below
    wandb_project: str = "vitssl"
    progress: bool = True
    # online k-NN: every N epochs (0: off), a labelled set (built-in name or ImageFolder with
    # train/ and val/): train split as memory, val split as queries; logged as knn_top1
    knn_every_epochs: int = 0
    knn_data: str = ""
    knn_k: int = 20
    # under torchrun: "ddp" (replicated) or "fsdp" (fully sharded, for large backbones); see docs/distributed.md
    strategy: str = "ddp"
    find_unused_parameters: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        from vitssl.engine.config_checks import check_train

        check_train(self)
