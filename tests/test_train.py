"""The step-wise trainer: init, dead-code events, expiry order, reproducibility, thresholds, saving."""

from __future__ import annotations

import torch

from rvq_viewer.training.trainer import StepStats, Trainer, TrainSettings


def small(**overrides) -> TrainSettings:
    base = dict(n_q=2, codebook_size=16, kmeans_iters=5, batch_size=128, steps=5, seed=3)
    return TrainSettings(**{**base, **overrides})


def frames(n=512, dim=4, seed=0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def is_row_of(rows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each row of `rows`, whether it equals some row of `pool`."""
    return (rows[:, None, :] - pool[None, :, :]).abs().amax(dim=-1).amin(dim=1) < 1e-5


def cb(trainer: Trainer, layer: int = 0):
    return trainer.rvq.layers[layer]._codebook


def test_kmeans_init_happens_on_first_step():
    # K distinct frames and batch == K: k-means centres are the frames themselves, each code owns one
    # frame, and the EMA update then leaves them unchanged, so the rows must be exactly the data.
    data = frames(n=16)
    trainer = Trainer(data, small(n_q=1, batch_size=16, threshold_ema_dead_code=0.0))
    assert cb(trainer).inited.item() == 0
    assert cb(trainer).embed.abs().sum() == 0
    stats = trainer.step()
    assert cb(trainer).inited.item() == 1
    assert is_row_of(cb(trainer).embed, data).all()
    assert stats.step == 1 and trainer.step_count == 1
    assert stats.used == [16] and abs(stats.perplexity[0] - 16) < 1e-6


def test_random_init_is_not_data_like_and_is_marked_inited():
    trainer = Trainer(frames(), small(kmeans_init=False))
    assert cb(trainer).inited.item() == 1
    assert not is_row_of(cb(trainer).embed, trainer.frames).any()


def test_absurd_threshold_expires_every_code_with_exact_sizes():
    s = small(threshold_ema_dead_code=1e9)
    trainer = Trainer(frames(), s)
    first = trainer.step()
    # Step 1, EnCodec order: expiry sees the k-means bin counts, which sum to the batch size per layer.
    for layer in range(s.n_q):
        evs = [e for e in first.events if e.layer == layer]
        assert sorted(e.code for e in evs) == list(range(s.codebook_size))
        assert all(e.step == 1 for e in evs)
        assert sum(e.ema_size_before for e in evs) == s.batch_size
    sizes_after_first = [cb(trainer, i).cluster_size.clone() for i in range(s.n_q)]
    second = trainer.step()
    assert {e.step for e in second.events} == {2}
    for e in second.events:
        assert abs(e.ema_size_before - sizes_after_first[e.layer][e.code].item()) < 1e-5
    assert len(trainer.events) == 2 * s.n_q * s.codebook_size
    assert trainer.events == first.events + second.events
    assert second.dead == [s.codebook_size] * s.n_q


def test_expiry_order_decides_what_a_replaced_code_holds():
    data = frames()

    def after_two_steps(expire_before_ema: bool):
        settings = small(n_q=1, threshold_ema_dead_code=1e9, expire_before_ema=expire_before_ema)
        trainer = Trainer(data, settings)
        trainer.run(2)
        return cb(trainer)

    encodec = after_two_steps(True)
    # EnCodec order: the EMA update runs after the respawn and overwrites every code with its ratio.
    size = encodec.cluster_size
    smoothed = (size + encodec.epsilon) / (size.sum() + size.numel() * encodec.epsilon) * size.sum()
    assert torch.allclose(encodec.embed, encodec.embed_avg / smoothed.unsqueeze(1))
    assert not is_row_of(encodec.embed, data).any()
    # GPT-SoVITS order: the respawn comes last, so every code is a frame of the batch.
    sovits = after_two_steps(False)
    assert is_row_of(sovits.embed, data).all()
    assert not torch.allclose(sovits.embed, encodec.embed)


def test_same_seed_same_codebooks_and_events():
    for kmeans_init in (True, False):
        settings = small(kmeans_init=kmeans_init, threshold_ema_dead_code=6.0)
        runs = [Trainer(frames(), settings) for _ in range(2)]
        for t in runs:
            t.run()
        a, b = (t.rvq.state_dict() for t in runs)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert runs[0].events == runs[1].events and len(runs[0].events) > 0
    other = Trainer(frames(), small(seed=4, threshold_ema_dead_code=6.0))
    other.run()
    assert not torch.equal(other.rvq.state_dict()["layers.0._codebook.embed"], a["layers.0._codebook.embed"])


def test_trainer_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Trainer(frames(), small(kmeans_init=False)).run(2)
    assert torch.equal(torch.rand(3), expected)


def three_clusters_with_a_far_code():
    """Frames at three points, 64 each; codebook = those points plus one far code nobody uses."""
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    data = centres.repeat_interleave(64, dim=0)
    codebook = torch.cat([centres, torch.tensor([[100.0, 100.0]])])
    return data, codebook


def test_relative_threshold_scales_with_uniform_share():
    data, codebook = three_clusters_with_a_far_code()
    # K=4, batch 64: every size starts at the share 16 and the sizes always sum to 64. The far code's
    # size halves each step (decay 0.5): 16, 8, 4 before steps 1, 2, 3.
    common = dict(n_q=1, codebook_size=4, batch_size=64, decay=0.5, threshold_ema_dead_code=0.5)
    relative = Trainer(data, small(threshold_relative=True, **common), init_codebooks=[codebook])
    relative.run(3)
    # Relative: dead below 0.5 * 64 / 4 = 8, first true before step 3 (size 4).
    assert [(e.layer, e.code, e.step, e.ema_size_before) for e in relative.events] == [(0, 3, 3, 4.0)]
    assert cb(relative).threshold_ema_dead_code == 8.0
    # Absolute 0.5 frames: the far code is still far above it.
    absolute = Trainer(data, small(threshold_relative=False, **common), init_codebooks=[codebook])
    absolute.run(3)
    assert absolute.events == []


def test_init_codebooks_are_kept_by_the_ema():
    data, codebook = three_clusters_with_a_far_code()
    trainer = Trainer(data, small(n_q=1, codebook_size=4, batch_size=64, threshold_ema_dead_code=0.0),
                      init_codebooks=[codebook])
    c = cb(trainer)
    assert c.inited.item() == 1 and torch.equal(c.embed, codebook)
    assert torch.allclose(c.cluster_size, torch.full((4,), 16.0))
    trainer.run(3)
    # embed_avg is the EMA sum consistent with embed, so codes sitting on the data stay there.
    assert torch.allclose(c.embed[:3], codebook[:3], atol=1e-4)


def test_run_callback_and_should_stop():
    trainer = Trainer(frames(), small())
    seen: list[StepStats] = []
    history = trainer.run(10, callback=seen.append, should_stop=lambda: len(seen) >= 3)
    assert [s.step for s in history] == [1, 2, 3] and seen == history
    assert trainer.step_count == 3
    s = history[-1]
    assert len(s.used) == len(s.perplexity) == len(s.dead) == 2
    assert all(1 <= p <= u <= 16 for p, u in zip(s.perplexity, s.used))
    assert s.residual_mse >= 0


def test_save_round_trip(tmp_path):
    settings = small()
    trainer = Trainer(frames(), settings)
    trainer.run(4)
    path = tmp_path / "ckpt.pt"
    trainer.save(path)
    package = torch.load(path, weights_only=True)
    names = ("inited", "cluster_size", "embed", "embed_avg")
    expected = {f"quantizer.vq.layers.{i}._codebook.{n}" for i in range(settings.n_q) for n in names}
    assert set(package["state_dict"]) == expected
    state = trainer.rvq.state_dict()
    assert all(torch.equal(package["state_dict"]["quantizer.vq." + k], v) for k, v in state.items())
    assert package["step"] == 4
    assert TrainSettings.from_dict(package["config"]) == settings


def test_settings_from_dict_ignores_unknown_keys():
    data = {**TrainSettings(n_q=3).to_dict(), "from_the_future": 1}
    assert TrainSettings.from_dict(data) == TrainSettings(n_q=3)
