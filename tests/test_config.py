import pytest
from omegaconf import OmegaConf

from vitssl.config import ConfigError, load_config, preset_names, to_objects
from vitssl.methods import DINOConfig, method_configs


def load(preset=None, overrides=()):
    return load_config(preset, list(overrides), method_configs())


def test_defaults_are_dino_code_defaults():
    cfg = to_objects(load())
    assert isinstance(cfg.method, DINOConfig)
    m, o = cfg.method, cfg.optim
    assert (m.head.out_dim, m.teacher_temp, m.student_temp, m.momentum_teacher, m.center_momentum) == (65536, 0.04, 0.1, 0.996, 0.9)
    assert (o.lr, o.min_lr, o.warmup_epochs, o.weight_decay, o.weight_decay_end, o.clip_grad) == (5e-4, 1e-6, 10, 0.04, 0.4, 3.0)
    assert (m.crops.local_crops_number, m.crops.global_crops_scale, m.crops.local_crops_scale) == (8, [0.4, 1.0], [0.05, 0.4])
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.backbone.drop_path_rate) == (64, 100, 0.1)


def test_boost_preset_inherits_and_overrides():
    cfg = to_objects(load("dino_vit_small16_boost"))
    assert cfg.backbone.name == "vit_small" and cfg.train.epochs == 300
    assert (cfg.method.teacher_temp, cfg.method.warmup_teacher_temp_epochs, cfg.method.head.norm_last_layer) == (0.07, 30, False)


def test_command_line_overrides_win():
    cfg = to_objects(load("dino_vit_small16", ["optim.lr=1e-3", "method.crops.local_crops_scale=[0.1,0.3]"]))
    assert cfg.optim.lr == 1e-3 and cfg.method.crops.local_crops_scale == [0.1, 0.3]


def test_typo_names_the_closest_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr': did you mean 'optim.lr'\?"):
        load(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="method.teacher_tmp"):
        load(None, ["method.teacher_tmp=0.1"])


def test_bad_values_and_bad_names():
    with pytest.raises(ConfigError, match="train.epochs"):
        load(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="no '='"):
        load(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="unknown preset 'dino_vit_smal16': did you mean 'dino_vit_small16'"):
        load("dino_vit_smal16")
    with pytest.raises(ConfigError, match="unknown method 'dinoo': did you mean 'dino'"):
        load(None, ["method.name=dinoo"])


def test_yaml_file_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: dino_vit_small16\noptim:\n  lr: 0.002\n")
    cfg = to_objects(load(str(path)))
    assert cfg.optim.lr == 0.002 and cfg.backbone.name == "vit_small"


def test_saved_config_reloads_identically(tmp_path):
    cfg = load("dino_vit_base16")
    (tmp_path / "c.yaml").write_text(OmegaConf.to_yaml(cfg))
    again = load_config(None, [], method_configs(), base=OmegaConf.load(tmp_path / "c.yaml"))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name):
    to_objects(load(name))
