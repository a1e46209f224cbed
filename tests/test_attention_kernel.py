"""The fast encoder attention kernel against the plain dense reference in the same module.

A seeded random sweep (plain loops; hypothesis is not a dependency) over lengths, windows, heads, padding and
global layouts, covering both local paths (one dense block for at most 3w tokens, blocks of w beyond) and both
global-row paths (folded and direct), with and without ``output_attentions``, and the local part without
autograd in chunks of query blocks as well as with autograd in one. The reference (``dense_encoder_attention``)
is O(L²) and written for reading; the kernel must agree with it to 1e-5 of the largest value, outputs and
probabilities alike. Agreement with transformers is tested in
tests/test_modeling_parity.py.
"""
import math

import torch

from spacy_led.modeling.attention import EncoderMaskLayout, LEDEncoderSelfAttention, dense_encoder_attention

from conftest import relative_error

TOL = 1e-5
N_CASES = 120


def random_case(generator: torch.Generator, max_one_sided: int = 6, head_dims=(2, 5), head_dim_step: int = 1,
                max_length=lambda one_sided: 9 * one_sided + 3):
    """Module, hidden states and masks of one random case; every row has at least one real token. The head size
    is ``head_dim_step`` times a draw from ``head_dims``; the length is drawn up to ``max_length(one_sided)``."""
    def draw(low, high):  # inclusive
        return int(torch.randint(low, high + 1, (), generator=generator))

    one_sided, heads = draw(1, max_one_sided), draw(1, 3)
    head_dim, batch = head_dim_step * draw(*head_dims), draw(1, 3)
    length = draw(1, max_length(one_sided))
    module = LEDEncoderSelfAttention(heads * head_dim, heads, 2 * one_sided, dropout=0.0).eval()
    with torch.no_grad():  # nn.Linear's own init already gives random biases; widen the weights a little
        for param in module.parameters():
            param.mul_(3.0)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    global_mask = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        attention_mask[row, : draw(1, length)] = 1
        n_global = draw(0, min(length, 3)) if draw(0, 2) else draw(0, length)  # few, or up to all tokens
        global_mask[row, torch.randperm(length, generator=generator)[:n_global]] = 1  # may land on padding
    hidden = torch.randn(batch, length, heads * head_dim, generator=generator)
    return module, hidden, attention_mask, global_mask


def reference(module, hidden, attention_mask, global_mask):
    def heads(projection):
        batch, length, _ = hidden.shape
        return projection(hidden).view(batch, length, module.num_heads, module.head_dim).transpose(1, 2)

    return dense_encoder_attention(
        heads(module.query), heads(module.key), heads(module.value),
        heads(module.query_global), heads(module.key_global), heads(module.value_global),
        attention_mask, global_mask, module.one_sided_attn_window_size,
    )


def dense_from_kernel(probs, layout: EncoderMaskLayout, one_sided: int) -> torch.Tensor:
    """The kernel's sparse ``EncoderAttentionProbs`` spread out to (B, H, L, L), as the reference gives them."""
    batch, heads, length, width = probs.band.shape
    dense = torch.zeros(batch, heads, length, length)
    keys = torch.arange(length)[:, None] + torch.arange(width)[None, :] - one_sided  # (L, 2w+1)
    inside = (keys >= 0) & (keys < length)
    dense.scatter_add_(-1, keys.clamp(0, length - 1).expand(batch, heads, -1, -1), probs.band * inside)
    if layout.has_global:
        slots = layout.global_slot_valid[:, None, None, :]
        index = layout.global_index[:, None, None, :].expand(-1, heads, length, -1)
        dense.scatter_add_(-1, index, probs.to_global * slots)
        for row, column in layout.global_slot_valid.nonzero().tolist():
            dense[row, :, layout.global_index[row, column]] = probs.of_global[row, :, column]
    return dense.masked_fill(layout.is_pad[:, None, :, None], 0.0)


def test_kernel_equals_the_dense_reference_over_random_layouts():
    generator = torch.Generator().manual_seed(1234)
    paths, chunk_counts = set(), set()
    for case in range(N_CASES):
        module, hidden, attention_mask, global_mask = random_case(generator)
        layout = EncoderMaskLayout.build(attention_mask, global_mask)
        one_sided = module.one_sided_attn_window_size
        with torch.no_grad():
            expected_out, expected_probs = reference(module, hidden, attention_mask, global_mask)
            expected_out = expected_out.transpose(1, 2).reshape(hidden.shape)
            fused_out, no_probs = module(hidden, layout, output_attentions=False)
            explicit_out, probs = module(hidden, layout, output_attentions=True)
            # Without autograd the local part runs over chunks of whole blocks: here 1 to 3 blocks per chunk,
            # the last chunk often partial.
            module.chunk_tokens = int(torch.randint(1, 4, (), generator=generator)) * one_sided
            chunked_out, _ = module(hidden, layout)
        with torch.enable_grad():  # one chunk of every block, as in training
            whole_out, _ = module(hidden, layout)
        assert no_probs is None
        details = f"case {case}: shape {tuple(hidden.shape)}, w={one_sided}, globals {global_mask.sum(1).tolist()}"
        assert relative_error(fused_out, expected_out) <= TOL, details
        assert relative_error(explicit_out, expected_out) <= TOL, details
        assert relative_error(chunked_out, expected_out) <= TOL, details
        assert relative_error(whole_out, expected_out) <= TOL, details
        assert relative_error(dense_from_kernel(probs, layout, one_sided), expected_probs) <= TOL, details
        local = "dense_block" if layout.block_size(one_sided) == hidden.shape[1] else "blocked"
        rows = "none" if not layout.has_global else (
            "folded" if module.folds_global_projections(layout.num_global) else "direct")
        paths.add((local, rows))
        blocks = -(-hidden.shape[1] // layout.block_size(one_sided))
        chunk_counts.add(min(-(-blocks // max(1, module.chunk_tokens // one_sided)), 3))
    # The sweep reached every combination of the kernel's paths, and 1, 2 and 3+ chunks.
    assert paths == {(local, rows) for local in ("dense_block", "blocked") for rows in ("none", "folded", "direct")}
    assert chunk_counts == {1, 2, 3}


def test_reference_is_full_attention_when_the_window_covers_everything():
    """A sanity check of the reference itself: with a window wider than the input and no global token it is
    ordinary softmax attention, and padding keys get no weight."""
    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 9, 4, generator=generator) for _ in range(3))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    out, probs = dense_encoder_attention(q, k, v, q, k, v, mask, torch.zeros_like(mask), one_sided=20)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(4)).masked_fill(mask[:, None, None, :] == 0, -math.inf)
    expected = torch.softmax(scores, dim=-1)
    expected[1, :, 6:] = 0.0  # padding rows
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(out, expected @ v, atol=1e-6)
    assert float(probs[1, :, :6, 6:].abs().max()) == 0.0
