"""Photo-like synthetic images for the augmentation tests (no files, no downloads)."""

import torch


def natural_image(height: int = 72, width: int = 96, seed: int = 0) -> torch.Tensor:
    """uint8 (3, H, W): smooth colour gradients, a few discs and mild noise (photo-like statistics)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    img = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * torch.sin(3 * y + 1) ** 2, 0.7 - 0.5 * x * y])
    for _ in range(4):
        cy, cx, r = torch.rand(3, generator=g)
        disc = ((y - cy) ** 2 + (x - cx) ** 2 < (0.1 + 0.2 * r) ** 2).float()
        img = img * (1 - disc) + disc * torch.rand(3, 1, 1, generator=g)
    img = img + 0.03 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)
