"""The Lightning callback and the Hugging Face TrainerCallback, each in a real (tiny) training run."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fixtures_formats import require
from rvq_viewer.pipeline import open_run
from rvq_viewer.quant import ResidualVectorQuantization

STEPS, BATCH, FRAMES = 6, 2, 16


class Codec(torch.nn.Module):
    """An encoder and an RVQ: the shape of a codec's training model. Records its codes independently."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Conv1d(4, 8, 1)
        self.quantizer = ResidualVectorQuantization(num_quantizers=2, dim=8, codebook_size=16, kmeans_init=True,
                                                    kmeans_iters=2)
        self.seen = np.zeros((2, 16), dtype=np.int64)

    def forward(self, x):
        out = self.quantizer(self.encoder(x))
        if self.training:
            self.seen += np.stack([np.bincount(c.flatten().numpy(), minlength=16) for c in out.codes])
        return (out.quantized - self.encoder(x)).pow(2).mean() + out.losses.sum()


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(STEPS * BATCH, 4, FRAMES, generator=g)


def check(run_dir, model, every):
    run = open_run(run_dir)
    total = sum(np.stack(run.window_data(i)[0]) for i in range(len(run.windows)))
    assert np.array_equal(total, model.seen)
    assert [(w.step_from, w.step_to) for w in run.windows] == [(s, min(s + every - 1, STEPS - 1))
                                                               for s in range(0, STEPS, every)]
    run.close()


def test_lightning_callback_records_a_fit(tmp_path):
    L = require("lightning")
    from rvq_viewer.monitor.lightning import CodebookMonitorCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.codec = Codec()

        def training_step(self, batch, batch_idx):
            return self.codec(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    module = Module()
    loader = torch.utils.data.DataLoader(data(), batch_size=BATCH)
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[CodebookMonitorCallback(tmp_path / "run", every=4)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    check(tmp_path / "run", module.codec, 4)


def test_hugging_face_callback_records_a_trainer_run(tmp_path):
    transformers = require("transformers")
    from rvq_viewer.monitor.huggingface import CodebookMonitorCallback

    class Dataset(torch.utils.data.Dataset):
        def __init__(self):
            self.x = data()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i]}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.codec = Codec()

        def forward(self, x):
            return {"loss": self.codec(x)}

    model = Model()
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=STEPS,
                                          per_device_train_batch_size=BATCH, report_to=[], save_strategy="no",
                                          use_cpu=True, disable_tqdm=True, logging_strategy="no",
                                          dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Dataset(),
                                   callbacks=[CodebookMonitorCallback(tmp_path / "run", every=4)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    check(tmp_path / "run", model.codec, 4)
