"""The dead-code view's table: codes unused on the features or EMA-dead, each with its nearest live code."""

from __future__ import annotations

import threading

import numpy as np

from ..quant import nearest_neighbours
from .session import DeadCodeTable, Session


def dead_code_table(cancel: threading.Event, session: Session, layer: int, counts: np.ndarray | None,
                    complete: bool) -> DeadCodeTable:
    """Codes of `layer` unused on the features or EMA-dead, each with its nearest live code.

    "Live" means used on the features; with no audit data (`counts` None or all zero) nothing is
    called unused, and live means not EMA-dead.
    """
    codebook = session.codebooks[layer]
    k = len(codebook)
    if counts is None or counts.sum() == 0:
        counts = np.zeros(k, dtype=np.int64)
        unused = np.zeros(k, dtype=bool)
    else:
        unused = counts == 0
    ema_dead = np.zeros(k, dtype=bool)
    if session.ema_dead is not None:
        ema_dead[session.ema_dead[layer]] = True
    live = ~unused if unused.any() or counts.sum() > 0 else ~ema_dead
    codes = np.flatnonzero(unused | ema_dead)
    live_idx = np.flatnonzero(live)
    position = np.full(k, -1, dtype=np.int64)        # row of each live code in the live table
    position[live_idx] = np.arange(live_idx.size)
    nn, dist = nearest_neighbours(codebook[codes], codebook[live_idx], exclude=position[codes],
                                  should_stop=cancel.is_set)
    neighbour = np.where(nn >= 0, live_idx[np.clip(nn, 0, None)] if live_idx.size else -1, -1)
    return DeadCodeTable(layer=layer, codes=codes, unused=unused[codes], ema_dead=ema_dead[codes],
                         counts=counts[codes], ema_size=None if session.ema_sizes is None
                         else session.ema_sizes[layer][codes], norm=session.norms[layer][codes],
                         neighbour=neighbour.astype(np.int64), distance=dist.astype(np.float32), complete=complete,
                         live_count=int(live_idx.size))
