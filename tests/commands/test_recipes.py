"""`vitssl recipes`: every preset has its paper, target number and compute."""

from vitssl.cli import main
from vitssl.commands.recipes import RECIPES, default_recipe, recipe_rows
from vitssl.config import load_config, preset_names
from vitssl.methods import method_configs


def test_every_entry_names_a_preset_and_every_preset_cites_its_paper():
    """A preset without an entry (a new method's) shows its method's paper, not a blank."""
    assert sorted(set(RECIPES) - set(preset_names())) == [], "recipes.py names presets that do not exist"
    for name, recipe in RECIPES.items():
        assert recipe.paper and recipe.target and recipe.compute, name
    for row in recipe_rows():
        assert row["paper"] and row["paper"] != row["method"] and row["target"] and row["compute"], row


def test_a_preset_without_an_entry_cites_its_methods_paper():
    assert default_recipe("selfpatch").paper == RECIPES["selfpatch_vit_small16"].paper
    assert default_recipe("mae").paper == RECIPES["mae_vit_base16"].paper


def test_rows_read_method_and_backbone_from_the_preset():
    rows = {r["preset"]: r for r in recipe_rows()}
    assert rows["dino_vit_small16"]["method"] == "dino" and rows["dino_vit_small16"]["backbone"] == "vit_small/16"
    assert rows["esvit_swin_tiny_w7"]["method"] == "esvit" and "78.0 / 75.7" in rows["esvit_swin_tiny_w7"]["target"]
    assert "74.5 / 77.0" in rows["dino_vit_small16"]["target"]


def test_recipes_command_lists_every_preset(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}  (" in out for name in preset_names())
    assert main(["recipes", "dino_small_data_cifar"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dino_small_data_cifar  (dino, vit_tiny/4)") and "compute" in out
    assert main(["recipes", "dino_vit_smal16"]) == 2
    assert "did you mean 'dino_vit_small16'" in capsys.readouterr().err


def test_small_data_presets_keep_a_usable_token_grid_and_stable_settings():
    for name, tokens in (("dino_small_data_cifar", 8), ("dino_small_data_in100", 14)):
        cfg = load_config(name, [], method_configs())
        assert cfg.backbone.img_size // cfg.backbone.patch_size == tokens
        assert cfg.method.crops.global_crops_size == cfg.backbone.img_size
        assert cfg.method.head.use_bn and cfg.method.head.norm_last_layer
        assert cfg.method.teacher_temp == 0.04 and cfg.method.momentum_teacher == 0.99
        assert cfg.method.head.out_dim < 65536
