import math

import torch
from torch import nn

from helios.nn.attention import Attention, Block, Mlp, Packing
from helios.nn.encodings import apply_rope, rope_tables


def naive_attention(attn: Attention, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    qkv = attn.qkv(x).view(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = logits.softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, n, d))


def test_attention_matches_naive_dense_and_packed() -> None:
    attn = Attention(16, num_heads=4, qk_norm=True)
    x = torch.randn(2, 5, 16)
    full = torch.ones(2, 5, dtype=torch.bool)
    torch.testing.assert_close(attn(x), naive_attention(attn, x, full), rtol=1e-5, atol=1e-5)
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    ref = naive_attention(attn, x, key_mask)[key_mask]
    packing = Packing(
        batch_size=2,
        n_max=5,
        sample=torch.tensor([0] * 5 + [1] * 3),
        slots=torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]),
        attn_mask=key_mask[:, None, None, :],
    )
    out = attn(x[key_mask], packing=packing)  # the stream [8, 16]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_block_drop_path_drops_whole_samples() -> None:
    blk = Block(8, 2, drop_path=0.5).train()
    packing = Packing(2, 3, torch.tensor([0, 0, 0, 1, 1, 1]), None, None)
    torch.manual_seed(3)
    x = torch.randn(6, 8)
    for _ in range(10):
        delta = blk(x, packing) - x
        changed = (delta.abs().sum(-1) > 0).view(2, 3)
        assert (changed.all(1) | ~changed.any(1)).all()


def test_rope_depends_on_relative_positions_only() -> None:
    q, k = torch.randn(1, 2, 6, 16), torch.randn(1, 2, 6, 16)
    pos = torch.rand(1, 6, 2) * 50
    r1, r2 = rope_tables(pos, 16), rope_tables(pos + torch.tensor([7.0, -3.0]), 16)
    l1 = apply_rope(q, r1) @ apply_rope(k, r1).transpose(-1, -2)
    l2 = apply_rope(q, r2) @ apply_rope(k, r2).transpose(-1, -2)
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(l1, q @ k.transpose(-1, -2))
    torch.testing.assert_close(apply_rope(q, r1).norm(dim=-1), q.norm(dim=-1))


def test_block_parts_are_swappable() -> None:
    class WideMlp(Mlp):
        def __init__(self, dim: int, hidden_dim: int) -> None:
            super().__init__(dim, 2 * hidden_dim, act_layer=nn.SiLU)

    blk = Block(16, 2, mlp_ratio=2.0, norm_layer=nn.RMSNorm, mlp_layer=WideMlp)
    assert isinstance(blk.norm1, nn.RMSNorm) and blk.mlp.fc1.out_features == 64
    assert blk(torch.randn(2, 3, 16)).shape == (2, 3, 16)
