"""A night of video through a trained student, streamed: clips are decoded one epoch at a time and batched
for the model, so memory holds one batch of clips whatever the night's length.

Decoding stops at the end of what the file holds. A damaged file (a decoding error) or one shorter than its
header says (a truncated copy) still gives the epochs before the damage: :class:`NightPrediction` says where
it stopped, and the command reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from kdbench.data.clips import model_input
from kdbench.errors import KdbenchError, first_line


@dataclass
class NightPrediction:
    probabilities: np.ndarray    # (epochs, classes) float64, softmax of the student's logits
    stopped: str = ""            # why decoding ended early ("" = a clean end of file)

    @property
    def stages(self) -> np.ndarray:
        return self.probabilities.argmax(1).astype(np.int8)

    def __len__(self) -> int:
        return len(self.probabilities)


def predict_clips(model: torch.nn.Module, clips: Iterator[np.ndarray], *, batch_size: int, device: torch.device,
                  total: int | None = None, progress: bool = True, start: float = 0.0, epoch: float = 30.0,
                  amp: torch.dtype | None = None) -> NightPrediction:
    """Class probabilities per clip, ``batch_size`` clips per forward pass, under autocast to ``amp`` if given
    (the run's mixed precision, as its own evaluation ran). ``total`` (the epochs the header promises) only
    sizes the progress bar; ``start`` and ``epoch`` place a decoding error in video time."""
    import av
    from tqdm import tqdm

    from kdbench.engine.loop import autocast

    done: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    stopped = ""

    def flush() -> None:
        if not batch:
            return
        x = model_input(np.stack(batch)).to(device, non_blocking=True)
        try:
            with torch.inference_mode(), autocast(device, amp):
                logits = model(x).logits
        except torch.cuda.OutOfMemoryError:
            raise KdbenchError(f"out of GPU memory for a batch of {len(batch)} clips: pass a smaller --batch-size "
                               f"(nothing written)") from None
        done.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
        bar.update(len(batch))
        batch.clear()

    with tqdm(total=total, desc="predict", unit="epoch", disable=not progress, leave=False) as bar:
        count = 0
        clips = iter(clips)
        while True:
            try:
                clip = next(clips)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError, ValueError) as error:  # damage: keep what was read, say where
                at = start + count * epoch
                stopped = (f"decoding failed in epoch {count + 1} (video {at:.1f}-{at + epoch:.1f} s): "
                           f"{first_line(error)}")
                break
            batch.append(clip)
            count += 1
            if len(batch) == batch_size:
                flush()
        flush()
    probabilities = np.concatenate(done) if done else np.zeros((0, 0))
    return NightPrediction(probabilities, stopped)
