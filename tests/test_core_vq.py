"""The core RVQ against EnCodec's own implementation (PyPI encodec 0.1.1, core_vq.py)."""

from __future__ import annotations

import pytest
import torch

from peers import encodec_core_vq
from rvq_viewer.quant import EuclideanCodebook, ResidualVectorQuantization
from rvq_viewer.quant.kmeans import kmeans


def trained_state(ref, generator: torch.Generator) -> dict:
    """A state dict with a random non-zero codebook: a fresh EnCodec module holds zeros and inited=0."""
    state = ref.state_dict()
    for key, value in state.items():
        if key.endswith("embed"):
            state[key] = torch.randn(value.shape, generator=generator) * 2
        elif key.endswith("embed_avg"):
            state[key] = torch.randn(value.shape, generator=generator)
        elif key.endswith("cluster_size"):
            state[key] = torch.rand(value.shape, generator=generator) * 10
        elif key.endswith("inited"):
            state[key] = torch.ones(1)
    return state


def pair(n_q: int, dim: int, k: int, seed: int = 0, **kwargs):
    """EnCodec's RVQ and ours holding the same state."""
    cv = encodec_core_vq()
    ref = cv.ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k, **kwargs)
    ours = ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k, **kwargs)
    state = trained_state(ref, torch.Generator().manual_seed(seed))
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    return ref, ours


def test_state_dict_keys_and_shapes_match_encodec():
    cv = encodec_core_vq()
    ref = cv.ResidualVectorQuantization(num_quantizers=3, dim=16, codebook_size=32)
    ours = ResidualVectorQuantization(num_quantizers=3, dim=16, codebook_size=32)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert our_shapes["layers.0._codebook.inited"] == (1,)
    assert our_shapes["layers.2._codebook.embed"] == (32, 16)


@pytest.mark.parametrize("n_q,dim,k,batch,frames", [
    (1, 768, 1024, 1, 40),    # GPT-SoVITS
    (8, 128, 1024, 2, 75),    # EnCodec 24 kHz
    (4, 32, 64, 3, 17),
    (2, 8, 4096, 1, 300),
])
def test_encode_decode_identical_to_encodec(n_q, dim, k, batch, frames):
    ref, ours = pair(n_q, dim, k)
    ref.eval()
    ours.eval()
    x = torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(1)) * 2
    codes_ref = ref.encode(x)
    codes = ours.encode(x)
    assert codes.shape == (n_q, batch, frames)
    assert torch.equal(codes, codes_ref)
    assert torch.equal(ours.decode(codes), ref.decode(codes_ref))


def test_forward_in_eval_matches_encodec_and_returns_asked_layers():
    ref, ours = pair(4, 16, 64)
    ref.eval()
    ours.eval()
    x = torch.randn(2, 16, 30, generator=torch.Generator().manual_seed(2))
    q_ref, codes_ref, _ = ref(x)
    out = ours(x, layers=[0, 2])
    assert torch.equal(out.codes, codes_ref)
    assert torch.allclose(out.quantized, q_ref, atol=1e-5)
    assert out.losses.shape == (4,)
    assert len(out.layer_outputs) == 2
    # The asked layer outputs are those layers' codewords.
    layer2 = ours.layers[2].decode(out.codes[2])
    assert torch.allclose(out.layer_outputs[1], layer2)
    # n_q limits the layers used.
    assert ours(x, n_q=2).codes.shape[0] == 2


def test_residual_is_input_minus_quantized():
    _, ours = pair(3, 8, 32)
    ours.eval()
    x = torch.randn(1, 8, 50, generator=torch.Generator().manual_seed(3))
    codes = ours.encode(x)
    first = ours.layers[0].decode(codes[0])
    # Layer 1 quantizes x - q0: re-encoding that residual with layer 1 alone gives the same codes.
    assert torch.equal(ours.layers[1].encode(x - first), codes[1])


@pytest.mark.parametrize("threshold", [0.0, 3.0])
def test_one_training_step_matches_encodec(threshold):
    """EMA update with laplace smoothing, and expiry (same RNG draws) give EnCodec's buffers exactly."""
    ref, ours = pair(2, 8, 16, threshold_ema_dead_code=threshold)
    ref.train()
    ours.train()
    x = torch.randn(2, 8, 40, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(123)
    ref(x)
    torch.manual_seed(123)
    ours(x)
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    for key in ref_state:
        assert torch.allclose(our_state[key], ref_state[key], atol=1e-6), key
    if threshold:
        assert ours.events, "a threshold above some EMA sizes must expire codes"


def test_dead_code_events_record_layer_code_step_and_size():
    book = EuclideanCodebook(4, 8, kmeans_init=False, threshold_ema_dead_code=1.0)
    book.layer_index = 3
    book.cluster_size.copy_(torch.tensor([5.0, 0.5, 5, 5, 0.25, 5, 5, 5]))
    book.train()
    book(torch.randn(64, 4))
    assert [(e.layer, e.code, e.step) for e in book.events] == [(3, 1, 1), (3, 4, 1)]
    assert [e.ema_size_before for e in book.events] == [0.5, 0.25]


def test_expiry_order_gpt_sovits_keeps_the_respawned_frame():
    """GPT-SoVITS expires after the EMA update, so a respawned code is exactly a batch frame."""
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    book = EuclideanCodebook(4, 8, kmeans_init=False, threshold_ema_dead_code=1e9, expire_before_ema=False)
    book.train()
    book(x)
    # Every code was expired; each row must now be one of the batch frames.
    assert torch.all(exact_distance_to_nearest(book.embed, x) == 0)
    encodec_order = EuclideanCodebook(4, 8, kmeans_init=False, threshold_ema_dead_code=1e9)
    encodec_order.train()
    encodec_order(x)
    assert torch.all(exact_distance_to_nearest(encodec_order.embed, x) > 0)


def exact_distance_to_nearest(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (rows[:, None] - x[None]).norm(dim=-1).min(dim=1).values


def test_kmeans_init_on_first_training_batch_only():
    book = EuclideanCodebook(2, 3, kmeans_init=True, kmeans_iters=10)
    assert book.inited.item() == 0 and torch.all(book.embed == 0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres.repeat_interleave(20, dim=0) + 0.01 * torch.randn(60, 2)
    book.eval()
    book(x)
    assert book.inited.item() == 0, "no k-means outside training"
    torch.manual_seed(0)
    book.init_embed_(x)
    assert book.inited.item() == 1
    # Lloyd's fixed point: each centre is the mean of the frames nearest to it, with those counts.
    nearest = torch.cdist(x, book.embed).argmin(dim=1)
    for code in range(3):
        members = x[nearest == code]
        assert book.cluster_size[code] == len(members)
        assert torch.allclose(book.embed[code], members.mean(dim=0), atol=1e-4)
    before = book.embed.clone()
    book.init_embed_(x + 100)  # once inited, never again
    assert torch.equal(book.embed, before)


def test_kmeans_recovers_separated_clusters_and_keeps_empty_centres():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    x = torch.cat([centres[0] + 0.1 * torch.randn(50, 2), centres[1] + 0.1 * torch.randn(50, 2)])
    means, bins = kmeans(x, 2, iters=10)
    assert sorted(bins.tolist()) == [50, 50]
    assert torch.allclose(means.sort(dim=0).values, centres, atol=0.1)
    means, bins = kmeans(x[:1], 3, iters=3)  # more clusters than distinct points
    assert torch.isfinite(means).all() and int(bins.sum()) == 1
