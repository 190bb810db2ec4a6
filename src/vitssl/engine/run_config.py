"""The config a run folder records, for a Trainer built in a user's own code.

`vitssl pretrain` passes the resolved config to the Trainer and writes config.yaml itself. A
library user who builds the method with `build_method(cfg.method, cfg.backbone)` and calls
`Trainer(...).fit()` passes none; the method remembers the configs it was built from, so the
checkpoint and config.yaml still say what `load_pretrained(RUN_DIR)` must rebuild.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from vitssl.engine.outputs import write_text_atomic


def run_config_of(method: Any, train: Any, optim: Any) -> dict[str, Any]:
    """{method, backbone, train, optim} as plain data, from what `build_method` recorded; {} for
    a method built another way."""
    built = getattr(method, "built_from", None)
    if built is None:
        return {}
    method_cfg, backbone_cfg = built
    return {"method": dataclasses.asdict(method_cfg), "backbone": dataclasses.asdict(backbone_cfg),
            "train": dataclasses.asdict(train), "optim": dataclasses.asdict(optim)}


def write_run_config(run_dir: Path, config: dict[str, Any]) -> None:
    """`run_dir/config.yaml` from `config`, unless the folder already has one (pretrain's)."""
    path = Path(run_dir) / "config.yaml"
    if config and not path.exists():
        write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))
