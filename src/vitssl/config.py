"""Run configuration: component dataclasses composed into one typed tree.

Precedence (lowest first): dataclass defaults <- preset YAML (and the presets it inherits)
<- command-line `key=value` overrides. Unknown keys and ill-typed values fail at load time
with one line naming the key (and the closest valid key). The resolved config is saved in
the run folder and in every checkpoint.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from vitssl.backbones import BackboneConfig
from vitssl.engine.image_size import apply_image_size
from vitssl.engine.optim import OptimConfig
from vitssl.engine.train_config import TrainConfig
from vitssl.engine.validation import ConfigError, require_int

__all__ = ["ConfigError", "DataConfig", "RunConfig", "load_config", "preset_names", "read_yaml", "save_config",
           "to_container", "to_objects"]

DEFAULT_METHOD = "dino"


@dataclass
class DataConfig:
    """Training images: a built-in data set name (mnist, digits, shapes) or an image folder.

    `max_image_pixels`: larger images are skipped and reported (None: 50M pixels, which bounds
    what one image costs a data-loader worker to about 0.65 GB, docs/checkpoints.md; 0: no limit).
    `image_size`: the training resolution, setting the backbone's and the crops' sizes together
    (vitssl/image_size.py); None leaves them as configured.
    """

    path: str = ""
    max_image_pixels: int | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        require_int("data.max_image_pixels", self.max_image_pixels, lo=0, optional=True)
        require_int("data.image_size", self.image_size, lo=1, optional=True)


@dataclass
class RunConfig:
    """The whole run. `method` holds the chosen method's own config dataclass.

    `init_from`: a checkpoint whose weights start a fresh run (e.g. EsViT's region task
    switched on after a view-only run); parts it lacks keep their initialisation.
    """

    method: Any = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init_from: str = ""

    def __post_init__(self) -> None:
        """Each section checked itself when built; here what spans sections (crops vs. patches)."""
        fits = getattr(self.method, "check_backbone_fit", None)
        if fits is not None:
            fits(self.backbone)


def preset_names() -> list[str]:
    folder = resources.files("vitssl") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_yaml(path: str | Path, what: str = "config file") -> DictConfig:
    """A YAML mapping from a file; any read or parse problem is one line naming the file and the fix."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a folder: pass a YAML file (or a preset name)")
    if not path.exists():
        raise ConfigError(f"{what} '{path}' does not exist: pass a YAML path or one of {preset_names()}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} '{path}' is not a UTF-8 text file: pass a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} '{path}': {e.strerror or e}; check the path and its permissions") from None
    return parse_yaml(text, f"{what} '{path}'")


def parse_yaml(text: str, where: str) -> DictConfig:
    """YAML text that must hold a mapping (or nothing) -> DictConfig; errors name `where`."""
    try:
        data = yaml.safe_load(text)  # syntax and top-level type first: OmegaConf asserts on a bare scalar
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{where} holds a YAML {type(data).__name__}, not a mapping: write `section:` lines "
                              "with indented `key: value` pairs (see `vitssl config`)")
        cfg = OmegaConf.create(text) if data else OmegaConf.create({})
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML: {problem}{at}; fix the file") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where} cannot be read as a config: {str(e).splitlines()[0]}; fix the file") from None
    assert isinstance(cfg, DictConfig)
    return cfg


def _read_preset(name_or_path: str, seen: tuple[str, ...] = ()) -> DictConfig:
    """Load a preset by packaged name or path, following its `inherit:` chain."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or any(sep in name_or_path for sep in "/\\"):
        cfg = read_yaml(path)
    else:
        packaged = resources.files("vitssl") / "configs" / f"{name_or_path}.yaml"
        if not packaged.is_file():
            close = difflib.get_close_matches(name_or_path, preset_names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown preset '{name_or_path}': {hint}choose one of {preset_names()}")
        cfg = parse_yaml(packaged.read_text(), f"preset '{name_or_path}'")
    if name_or_path in seen:
        raise ConfigError(f"preset '{name_or_path}' inherits from itself through {seen}")
    parent = cfg.pop("inherit", None)
    if parent:
        if not isinstance(parent, str):
            raise ConfigError(f"inherit: {parent!r} in '{name_or_path}' is not one name: inherit from one preset or YAML path")
        cfg = OmegaConf.merge(_read_preset(parent, seen + (name_or_path,)), cfg)
    return cfg


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            keys.extend(_flat_keys(node._get_node(k), full + "."))
    return keys


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' has no '=': write overrides as key=value, e.g. optim.lr=1e-3")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {overrides}: {str(e).splitlines()[0]}") from None


def load_config(
    preset: str | None,
    overrides: list[str],
    method_configs: Mapping[str, type],
    base: DictConfig | Mapping[str, Any] | None = None,
) -> DictConfig:
    """Build the validated config tree.

    `base` (e.g. a saved run config) replaces the preset as the starting point when given.
    The method section's schema is the dataclass of the method named by `method.name`.
    """
    raw = OmegaConf.create(dict(base) if isinstance(base, Mapping) else base) if base is not None else OmegaConf.create({})
    preset_cfg = _read_preset(preset) if preset else None
    if preset_cfg is not None:
        raw = OmegaConf.merge(raw, preset_cfg)
    override_cfg = _parse_overrides(overrides)
    raw = OmegaConf.merge(raw, override_cfg)
    name = OmegaConf.select(raw, "method.name", default=DEFAULT_METHOD)
    if name not in method_configs:
        close = difflib.get_close_matches(str(name), method_configs, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown method '{name}': {hint}choose one of {sorted(method_configs)}")
    schema = OmegaConf.structured(RunConfig(method=method_configs[name]()))
    OmegaConf.set_struct(schema, True)
    try:
        cfg = OmegaConf.merge(schema, raw)
    except ConfigKeyError as e:
        full_key = getattr(e, "full_key", None) or str(e).splitlines()[0]
        close = difflib.get_close_matches(str(full_key), _flat_keys(schema), n=1, cutoff=0.5)
        hint = f": did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{full_key}'{hint}") from None
    except OmegaConfBaseException as e:
        full_key = getattr(e, "full_key", "?")
        raise ConfigError(f"bad value for config key '{full_key}': {str(e).splitlines()[0]}") from None
    assert isinstance(cfg, DictConfig)
    apply_image_size(cfg, preset_cfg, override_cfg)  # data.image_size -> backbone and crop sizes
    _check_values(cfg)
    return cfg


def _check_values(cfg: DictConfig) -> None:
    """Build the dataclasses once: each checks its values (ranges, finiteness, choices) in __post_init__."""
    try:
        to_objects(cfg)
    except ConfigError:
        raise
    except ValueError as e:  # a check written before ConfigError existed
        raise ConfigError(str(e).strip().splitlines()[0]) from None
    except OmegaConfBaseException as e:
        full_key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"bad value for config key '{full_key}': {str(e).splitlines()[0]}") from None


def to_objects(cfg: DictConfig) -> RunConfig:
    """The typed dataclass tree the components take."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, RunConfig)
    return obj


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain dict (for checkpoints, which load with weights_only=True)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(cfg))
