"""A Vision Transformer that accepts any input side that is a multiple of its patch size.

Positional embeddings are FIXED 2-D sin-cos (MAE convention: first half of
the channels encodes the column, second half the row). The patch-centre
coordinates of any grid are scaled to the grid of ``ref_resolution`` so that
every input size encodes the same relative image positions; at the reference
resolution the embedding is exactly the standard one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, create_model
from torch import Tensor, nn

from hasten.errors import UserError
from hasten.models.common import Backbone, make_head
from hasten.registry import REGISTRY, Options


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(M,) positions -> (M, dim) embedding: [sin(p w_k), cos(p w_k)], w_k = 10000^(-k/(dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, ref_grid: float | None = None) -> Tensor:
    """(grid_h*grid_w, dim) 2-D sin-cos embedding, tokens in row-major order.

    With ``ref_grid`` G, patch centres are mapped onto the G x G reference grid:
    position i of an n-cell axis becomes (i + 0.5) * G / n - 0.5, which is i when n == G.
    """
    if dim % 4:
        raise UserError(f"vit: embed_dim must be a multiple of 4 for 2-D sin-cos embeddings, got {dim}")
    ys = torch.arange(grid_h, dtype=torch.float64)
    xs = torch.arange(grid_w, dtype=torch.float64)
    if ref_grid is not None:
        ys = (ys + 0.5) * (ref_grid / grid_h) - 0.5
        xs = (xs + 0.5) * (ref_grid / grid_w) - 0.5
    rows, cols = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(Backbone):
    """ViT with conv patch embedding, CLS token and fixed, resolution-scaled sin-cos positions."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        ref_resolution: int = 224,
    ) -> None:
        super().__init__()
        if patch_size < 1 or depth < 1 or num_heads < 1 or embed_dim % num_heads or embed_dim % 4:
            raise UserError(
                f"vit: need patch_size, depth, num_heads >= 1 and embed_dim divisible by num_heads and 4; "
                f"got patch_size={patch_size}, embed_dim={embed_dim}, depth={depth}, num_heads={num_heads}"
            )
        if ref_resolution < patch_size:
            raise UserError(f"vit: ref_resolution {ref_resolution} is below the patch size {patch_size}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.ref_grid = ref_resolution / patch_size
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.min_resolution = patch_size
        self.supports_any_resolution = False  # sides must be multiples of patch_size
        self.head = make_head(embed_dim, num_classes)
        # Plain dict, not buffers: embeddings are derived data, must not enter
        # state_dicts, and a seen grid size must cost no allocation per step.
        self._pos_cache: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def position_embedding(self, grid_h: int, grid_w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(1, grid_h*grid_w, embed_dim) embedding for a grid, cached per (grid, device, dtype)."""
        key = (grid_h, grid_w, device, dtype)
        cached = self._pos_cache.get(key)
        if cached is None:
            table = sincos_2d(self.embed_dim, grid_h, grid_w, self.ref_grid)
            cached = table.to(device=device, dtype=dtype).unsqueeze(0)
            self._pos_cache[key] = cached
        return cached

    def forward_features(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        tokens = tokens + self.position_embedding(grid_h, grid_w, tokens.device, tokens.dtype)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.blocks(torch.cat([cls, tokens], dim=1))
        features: Tensor = self.norm(tokens[:, 0])
        return features


#: (type, description) of each ViT option; the variants differ in the defaults
_VIT_FIELDS: dict[str, tuple[type, str, dict[str, Any]]] = {
    "patch_size": (int, "side of the square patches (inputs must be a multiple)", {"ge": 1}),
    "embed_dim": (int, "token width (a multiple of num_heads)", {"ge": 1}),
    "depth": (int, "transformer blocks", {"ge": 1}),
    "num_heads": (int, "attention heads", {"ge": 1}),
    "mlp_ratio": (float, "MLP hidden width / embed_dim", {"gt": 0}),
    "ref_resolution": (int, "resolution whose patch grid the sin-cos positions are laid out for", {"ge": 1}),
}


def _vit_options(name: str, defaults: dict[str, Any]) -> type[Options]:
    fields: dict[str, Any] = {
        key: (kind, Field(defaults[key], description=text, **bounds))
        for key, (kind, text, bounds) in _VIT_FIELDS.items()
    }
    model: type[Options] = create_model(  # type: ignore[call-overload]
        f"{name}_options", __base__=Options, __doc__=f"``model.options`` of ``model.name: {name}``.", **fields
    )
    return model


def _vit_builder(name: str) -> Any:
    def build(*, num_classes: int, in_channels: int, options: Any) -> VisionTransformer:
        return VisionTransformer(num_classes, in_channels, **options.model_dump())

    build.__doc__ = f"Vision Transformer {name}: multi-resolution, fixed 2-D sin-cos positions."
    return build


REGISTRY.models.add(
    "vit_s16",
    _vit_builder("vit_s16"),
    options=_vit_options(
        "vit_s16", dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, ref_resolution=224)
    ),
)
REGISTRY.models.add(
    "vit_tiny",
    _vit_builder("vit_tiny"),
    options=_vit_options(
        "vit_tiny", dict(patch_size=4, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0, ref_resolution=224)
    ),
)

__all__ = ["VisionTransformer", "sincos_1d", "sincos_2d"]
