"""Build the demo assets in assets/demo/: synthetic speech features and RVQ checkpoints trained on them.

    .venv/bin/python scripts/make_demo.py

Needs espeak-ng on PATH (a build-time tool only; nothing at run or test time needs it). Steps:
  1. generate varied English sentences from word lists (deterministic);
  2. speak them with several espeak-ng voices, variants, rates and pitches, resample to 16 kHz;
  3. 80-bin log-mel frames (25 ms window, 10 ms hop), silence trimmed, normalised per bin by the
     training set's mean / std;
  4. split by utterance into train and held-out, and train three runs with the project's Trainer:
     healthy (k-means init, expiry; its checkpoints every SERIES_EVERY steps form the series) and
     collapsed (random init, no expiry).
Everything random is seeded, so a rerun with the same espeak-ng gives the same files.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from math import gcd
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rvq_viewer.training.trainer import Trainer, TrainSettings, batch_perplexity  # noqa: E402
from rvq_viewer.quant.vq import ResidualVectorQuantization  # noqa: E402

OUT = ROOT / "assets" / "demo"
SEED = 1234
N_SENTENCES = 360
HELDOUT_FRACTION = 0.1
N_SAVED_TRAIN_UTTERANCES = 8
SAMPLE_RATE = 16000
N_MELS, WIN, HOP, N_FFT = 80, 400, 160, 512   # 25 ms window, 10 ms hop at 16 kHz -> 100 frames/s
LOG_FLOOR = 1e-5
SILENCE_DB = 40.0                             # frames this far below the utterance's loudest are cut
SERIES_EVERY = 200

# --- 1. sentences ------------------------------------------------------------------------------------
NAMES = ["Anna", "Marcus", "the doctor", "my neighbour", "a young pilot", "the old farmer", "Olivia",
         "the teacher", "our captain", "Theodore", "the baker", "a tired student", "Grace", "the mayor"]
VERBS = ["found", "painted", "carried", "borrowed", "forgot", "repaired", "described", "ordered",
         "measured", "hid", "photographed", "delivered", "sold", "noticed", "wrapped"]
ADJECTIVES = ["bright", "heavy", "broken", "curious", "silver", "quiet", "enormous", "tiny", "yellow",
              "ancient", "fragile", "muddy", "shiny", "crooked", "warm"]
OBJECTS = ["umbrella", "piano", "bicycle", "letter", "lantern", "basket of apples", "map", "violin",
           "suitcase", "clock", "kettle", "telescope", "blanket", "box of matches", "garden chair"]
PLACES = ["near the harbour", "behind the station", "in the kitchen", "under the bridge",
          "at the museum", "beside the river", "on the top floor", "in a small village",
          "outside the library", "across the valley"]
TIMES = ["yesterday morning", "last winter", "on Friday evening", "at midnight", "before breakfast",
         "every Sunday", "after the storm", "in nineteen eighty four", "three weeks ago", "at dawn"]
QUESTION_WORDS = ["Why", "When", "Where", "How often", "Who told you"]
EXCLAMATIONS = ["Wow", "Oh no", "Goodness", "Listen", "Hurry up", "Well done"]
NUMBERS = ["seven", "twelve", "forty two", "a hundred and six", "three thousand", "nineteen", "eighty"]


def make_sentences(n: int, rng: random.Random) -> list[str]:
    """Statements, questions, exclamations, lists and numbers: varied prosody for the voices."""
    def c(seq):
        return rng.choice(seq)

    templates = [
        lambda: f"{c(NAMES).capitalize()} {c(VERBS)} the {c(ADJECTIVES)} {c(OBJECTS)} {c(PLACES)} {c(TIMES)}.",
        lambda: f"{c(QUESTION_WORDS)} did {c(NAMES)} leave the {c(OBJECTS)} {c(PLACES)}?",
        lambda: f"{c(EXCLAMATIONS)}! The {c(OBJECTS)} is far too {c(ADJECTIVES)} for {c(NAMES)}.",
        lambda: f"We need {c(NUMBERS)} {c(ADJECTIVES)} things: a {c(OBJECTS)}, a {c(OBJECTS)} and a {c(OBJECTS)}.",
        lambda: f"{c(TIMES).capitalize()}, {c(NAMES)} {c(VERBS)} {c(NUMBERS)} of them, and nobody noticed.",
        lambda: f"Is it true that {c(NAMES)} {c(VERBS)} a {c(ADJECTIVES)} {c(OBJECTS)} {c(PLACES)}?",
        lambda: f"Please bring the {c(ADJECTIVES)} {c(OBJECTS)} to {c(NAMES)} {c(TIMES)}, not later.",
        lambda: f"The train leaves at {rng.randint(1, 12)} {c(['fifteen', 'thirty', 'forty five', 'o clock'])}, "
                f"platform {rng.randint(1, 9)}.",
    ]
    return [rng.choice(templates)() for _ in range(n)]


# --- 2. speech -----------------------------------------------------------------------------------------
LANGUAGES = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan"]
VARIANTS = ["", "+m1", "+m3", "+m7", "+f1", "+f2", "+f4", "+klatt", "+klatt3"]


def voice_for(rng: random.Random) -> dict:
    return {"voice": rng.choice(LANGUAGES) + rng.choice(VARIANTS), "rate": rng.randint(130, 200),
            "pitch": rng.randint(30, 70)}


def speak(text: str, voice: dict, workdir: Path) -> np.ndarray:
    """espeak-ng speech at 16 kHz, float in [-1, 1]."""
    wav = workdir / "utt.wav"
    subprocess.run(["espeak-ng", "-v", voice["voice"], "-s", str(voice["rate"]), "-p", str(voice["pitch"]),
                    "-w", str(wav), text], check=True, capture_output=True)
    rate, audio = wavfile.read(wav)
    audio = audio.astype(np.float64) / 32768.0
    g = gcd(SAMPLE_RATE, rate)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g)


# --- 3. features -------------------------------------------------------------------------------------
def hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0))
    return np.where(m >= 15.0, log, lin)


def mel_filterbank(n_mels=N_MELS, n_fft=N_FFT, sr=SAMPLE_RATE) -> np.ndarray:
    """[n_mels, n_fft//2+1] triangles on the Slaney scale, area-normalised (Slaney norm)."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_freqs - lower) / (centre - lower)
    falling = (upper - fft_freqs) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (upper - lower))


def log_mel(audio: np.ndarray, fbank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel [T, n_mels], frame power in dB [T]) from a periodic-Hann STFT without centring."""
    n_frames = 1 + (len(audio) - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    power = np.abs(np.fft.rfft(audio[idx] * window, n=N_FFT)) ** 2
    frame_db = 10 * np.log10(power.sum(1) + 1e-12)
    return np.log(np.maximum(power @ fbank.T, LOG_FLOOR)), frame_db


def trim_silence(feats: np.ndarray, frame_db: np.ndarray) -> np.ndarray:
    return feats[frame_db > frame_db.max() - SILENCE_DB]


# --- 4. training and evaluation ------------------------------------------------------------------
def heldout_usage(rvq, frames: torch.Tensor) -> dict:
    """Per-layer utilisation (fraction of codes used at least once) and perplexity on `frames` [T, D]."""
    rvq.eval()
    with torch.no_grad():
        codes = rvq.encode(frames.t().unsqueeze(0)).reshape(rvq.num_quantizers, -1)
    k = rvq.layers[0]._codebook.codebook_size
    return {"utilization": [round(torch.unique(c).numel() / k, 4) for c in codes],
            "perplexity": [round(batch_perplexity(c, k), 2) for c in codes]}


def event_counts(trainer: Trainer) -> dict:
    """Events count every replacement, so a code respawned on many steps counts many times."""
    per_layer = [0] * trainer.settings.n_q
    distinct = [set() for _ in range(trainer.settings.n_q)]
    for e in trainer.events:
        per_layer[e.layer] += 1
        distinct[e.layer].add(e.code)
    return {"events": sum(per_layer), "events_per_layer": per_layer,
            "distinct_codes_replaced_per_layer": [len(d) for d in distinct]}


def train(name: str, frames: torch.Tensor, settings: TrainSettings,
          series_dir: Path | None = None) -> tuple[Trainer, dict[int, int]]:
    """Run `settings.steps` steps; with `series_dir`, save a checkpoint every SERIES_EVERY steps
    (not step 0: a k-means run's codebooks are still all zeros there, initialised on the first step).

    Returns the trainer and, per saved step, the number of dead-code events up to that step.
    """
    trainer = Trainer(frames, settings)
    saved: dict[int, int] = {}
    t0 = time.time()

    def save_series(step: int) -> None:
        trainer.save(series_dir / f"step_{step:06d}.pt")
        saved[step] = len(trainer.events)

    def after_step(stats) -> None:
        if stats.step % SERIES_EVERY == 0:
            save_series(stats.step)

    trainer.run(callback=after_step if series_dir is not None else None)
    print(f"  {name}: {settings.steps} steps in {time.time() - t0:.1f} s, "
          f"{len(trainer.events)} dead-code events")
    return trainer, saved


def main() -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng)")
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    sentences = make_sentences(N_SENTENCES, rng)
    voices = [voice_for(rng) for _ in range(N_SENTENCES)]

    print(f"synthesising {N_SENTENCES} sentences ...")
    fbank = mel_filterbank()
    utterances = []
    with tempfile.TemporaryDirectory() as tmp:
        for text, voice in zip(sentences, voices):
            feats, frame_db = log_mel(speak(text, voice, Path(tmp)), fbank)
            utterances.append(trim_silence(feats, frame_db).astype(np.float32))

    order = list(range(N_SENTENCES))
    random.Random(SEED + 1).shuffle(order)
    n_held = int(round(HELDOUT_FRACTION * N_SENTENCES))
    held_ids, train_ids = sorted(order[:n_held]), sorted(order[n_held:])
    train_raw = np.concatenate([utterances[i] for i in train_ids])
    mean, std = train_raw.mean(0), train_raw.std(0) + 1e-5

    def normalise(x):
        return ((x - mean) / std).astype(np.float32)

    train_frames = torch.from_numpy(normalise(train_raw))
    heldout = normalise(np.concatenate([utterances[i] for i in held_ids]))
    print(f"frames: {len(train_frames)} train, {len(heldout)} held-out")

    if OUT.exists():
        for stale in ("series", "features"):
            shutil.rmtree(OUT / stale, ignore_errors=True)
    (OUT / "features").mkdir(parents=True, exist_ok=True)
    np.save(OUT / "heldout.npy", heldout)
    np.savez(OUT / "feature_norm.npz", mean=mean.astype(np.float32), std=std.astype(np.float32))
    saved_train = train_ids[:N_SAVED_TRAIN_UTTERANCES]
    for i in saved_train:
        np.save(OUT / "features" / f"utt_{i:04d}.npy", normalise(utterances[i]))

    runs = {
        "healthy": TrainSettings(kmeans_init=True, threshold_ema_dead_code=2.0, seed=SEED),
        "collapsed": TrainSettings(kmeans_init=False, threshold_ema_dead_code=0.0, seed=SEED),
    }
    print("training ...")
    held_t = torch.from_numpy(heldout)
    results, series_events = {}, {}
    for name, settings in runs.items():
        series_dir = OUT / "series" if name == "healthy" else None
        trainer, saved = train(name, train_frames, settings, series_dir)
        series_events.update(saved)
        trainer.save(OUT / f"{name}.pt")
        results[name] = {"settings": settings.to_dict(), **event_counts(trainer),
                         "heldout": heldout_usage(trainer.rvq, held_t)}
    if results["healthy"]["events"] == 0:
        sys.exit("the healthy run replaced no dead codes: the series would show no events")

    series = []
    for path in sorted((OUT / "series").glob("step_*.pt")):
        package = torch.load(path, weights_only=True)
        rvq = load_rvq(package["state_dict"])
        series.append({"file": f"series/{path.name}", "step": package["step"],
                       "events_so_far": series_events[package["step"]], **heldout_usage(rvq, held_t)})
    results["healthy"]["series"] = series

    manifest = {
        "description": "Demo RVQ checkpoints trained with rvq_viewer.training.trainer.Trainer on log-mel frames "
                       "of synthetic (espeak-ng) English speech; see README.md.",
        "seed": SEED,
        "espeak_ng": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip(),
        "features": {
            "kind": "log-mel", "n_mels": N_MELS, "sample_rate": SAMPLE_RATE, "window": WIN, "hop": HOP,
            "n_fft": N_FFT, "frame_rate_hz": SAMPLE_RATE / HOP, "window_fn": "periodic hann, no centring",
            "mel_scale": "slaney, slaney area norm, 0-8000 Hz", "log": f"natural log, floor {LOG_FLOOR}",
            "silence_trim_db": SILENCE_DB, "normalisation": "per bin (x - mean) / std with train statistics, "
                                                            "in feature_norm.npz and below",
            "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
        },
        "data": {"sentences": N_SENTENCES, "train_utterances": len(train_ids),
                 "heldout_utterances": len(held_ids), "train_frames": int(len(train_frames)),
                 "heldout_frames": int(len(heldout)), "heldout_utterance_ids": held_ids,
                 "saved_train_utterances": [f"features/utt_{i:04d}.npy" for i in saved_train],
                 "voices": sorted({v["voice"] for v in voices})},
        "checkpoints": {"healthy": "healthy.pt", "collapsed": "collapsed.pt",
                        "series": f"series/: the healthy run every {SERIES_EVERY} steps"},
        "runs": results,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print_summary(results)


def load_rvq(state_dict: dict) -> ResidualVectorQuantization:
    """A ResidualVectorQuantization in eval mode from a checkpoint's `quantizer.vq.` state dict."""
    prefix = "quantizer.vq."
    state = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    n_q = 1 + max(int(k.split(".")[1]) for k in state)
    k, dim = state["layers.0._codebook.embed"].shape
    rvq = ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k)
    rvq.load_state_dict(state)
    return rvq.eval()


def print_summary(results: dict) -> None:
    print("\nheld-out usage per layer (utilization / perplexity):")
    for name, r in results.items():
        u, p = r["heldout"]["utilization"], r["heldout"]["perplexity"]
        cells = "  ".join(f"{a:.2f}/{b:6.1f}" for a, b in zip(u, p))
        print(f"  {name:9s} {cells}   events {r['events']}")
    for c in results["healthy"]["series"]:
        print(f"  {c['file']}: utilization {c['utilization']}, {c['events_so_far']} events so far")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"assets/demo: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
