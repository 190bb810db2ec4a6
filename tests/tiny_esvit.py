"""The tiny EsViT Swin run (seconds on CPU) that the EsViT command-line test and the export test share."""

TINY_SWIN = ["backbone.embed_dim=16", "backbone.depth=1", "backbone.num_heads=1", "backbone.img_size=32",
             "backbone.drop_path_rate=0.0"]
SMALL_HEADS = [f"method.{h}.{k}={v}" for h in ("head", "region_head")
               for k, v in (("out_dim", 64), ("hidden_dim", 32), ("bottleneck_dim", 16))]
FAST = ["method.crops.global_crops_size=32", "method.crops.local_crops_size=16", "method.crops.local_crops_number=2",
        "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=2", "train.num_workers=0",
        "train.progress=false", "train.tensorboard=false", "train.device=cpu", "train.precision=fp32",
        "optim.warmup_epochs=0"]
