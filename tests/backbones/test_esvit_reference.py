"""cvt_tiny, vil_tiny and resnet50 against EsViT's own implementations (fixtures: see their README).

The original-layout state dict is rebuilt from the stored key names and shapes, imported with
the same renaming `vitssl import --from esvit` uses, and run on the seeded inputs.
"""

from functools import lru_cache

import pytest
import torch
from esvit_reference import FIXTURES, seeded_images, seeded_state, share_global_projections

from vitssl.backbones import create_backbone
from vitssl.commands.convert_esvit_backbones import (
    cvt_overrides,
    rename_cvt,
    rename_resnet,
    rename_vil,
    resnet_overrides,
    vil_overrides,
)

CASES = {"cvt_tiny": (rename_cvt, cvt_overrides), "resnet50": (rename_resnet, resnet_overrides),
         "vil_tiny": (rename_vil, vil_overrides)}
# What the fixtures store of the region tokens at 224 (all of them at 96): every 4th token and 8th
# channel of ResNet's 2048, every 2nd channel of ViL's 768.
REGION_224 = {"cvt_tiny": (slice(None), slice(None)), "resnet50": (slice(None, None, 4), slice(None, None, 8)),
              "vil_tiny": (slice(None), slice(None, None, 2))}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


@lru_cache(maxsize=1)
def imported(name):
    fixture = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    rename, overrides = CASES[name]
    original = share_global_projections(seeded_state(fixture["keys"], fixture["shapes"]))
    config = dict(o.removeprefix("backbone.").split("=") for o in overrides(original))
    assert config.pop("name") == name
    model = create_backbone(name, drop_path_rate=0.0, mask_padding=False if name == "cvt_tiny" else None,
                            **{k: int(v) for k, v in config.items() if k in ("embed_dim", "num_heads", "depth")})
    model.load_state_dict(rename(original), strict=True)
    return model.eval(), fixture


@pytest.mark.parametrize("name", sorted(CASES))
def test_features_equal_the_reference_at_224_and_96(name):
    model, fixture = imported(name)
    with torch.no_grad():
        for size, batch in ((224, 1), (96, 2)):
            x = seeded_images(batch, size)
            assert x.sum().item() == pytest.approx(fixture[f"input_sum_{size}"], rel=1e-6)
            tokens = model(x)
            region = tokens.patches if size == 96 else tokens.patches[:, REGION_224[name][0], REGION_224[name][1]]
            torch.testing.assert_close(tokens.pooled, fixture[f"pooled_{size}"], atol=5e-5, rtol=1e-4)
            torch.testing.assert_close(region, fixture[f"region_{size}"], atol=5e-5, rtol=1e-4)
            if name != "resnet50":
                linear = torch.cat([t.pooled for t in model.last_blocks(x, 4)], dim=-1)
                torch.testing.assert_close(linear, fixture[f"last4_{size}"], atol=5e-5, rtol=1e-4)


def test_masking_the_padding_departs_from_the_reference_only_where_it_pads():
    model, fixture = imported("cvt_tiny")
    model.mask_padding = True
    imported.cache_clear()
    with torch.no_grad():
        at_224 = model(seeded_images(1, 224)).patches  # 56/28/14/7: multiples of 7, nothing padded
        at_96 = model(seeded_images(2, 96)).patches  # 24 and 12 are padded to 28 and 14
    torch.testing.assert_close(at_224, fixture["region_224"], atol=5e-5, rtol=1e-4)
    assert (at_96 - fixture["region_96"]).abs().max() > 1e-2
