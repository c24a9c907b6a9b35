"""PANNs Cnn14 and Cnn14_emb512 (Kong et al., IEEE/ACM TASLP 2020) with the official attribute names.

Written from the facts in methods.md §5, not copied. The attribute names (``spectrogram_extractor``,
``logmel_extractor``, ``bn0``, ``conv_block1..6`` with ``conv1/bn1/conv2/bn2``, ``fc1``, ``fc_audioset``)
are what make ``Cnn14_mAP=0.431.pth`` / ``Cnn14_emb512_mAP=0.420.pth`` load strictly by key: the
released state dict has exactly these 84 entries, front-end included.

The front-end is torchlibrosa's (frozen, but stored in the state dict): its STFT is two Conv1d whose
weights are the windowed DFT basis, and its mel matrix is librosa's Slaney filterbank. torchlibrosa
pulls in librosa and numba (seconds to import), so it is imported only when a network is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The 32 kHz recipe of the released checkpoints (methods.md §5).
SAMPLE_RATE = 32000
N_FFT = 1024
HOP = 320
N_MELS = 64
FMIN, FMAX = 50, 14000
AUDIOSET_CLASSES = 527
WIDTHS = (64, 128, 256, 512, 1024, 2048)
#: five 2×2 average pools halve time five times, so at least 2**5 frames are needed; with centred
#: frames T = L // HOP + 1, that is L >= 31 * HOP samples (0.31 s at 32 kHz).
MIN_FRAMES = 2 ** 5
MIN_SAMPLES = (MIN_FRAMES - 1) * HOP

# SpecAugment as in the PANNs training recipe: two time stripes of < 64 frames, two mel stripes of < 8 bins.
TIME_DROP, TIME_STRIPES, FREQ_DROP, FREQ_STRIPES = 64, 2, 8, 2


def frames(n_samples: int) -> int:
    """Number of STFT frames of a centred (reflect-padded) transform of ``n_samples`` samples."""
    return n_samples // HOP + 1


def xavier_init(layer: nn.Module) -> nn.Module:
    """The PANNs initialisation of convs and linears: Xavier-uniform weights, zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class ConvBlock(nn.Module):
    """Two [3×3 conv without bias → BN → ReLU], then an average pool (skipped when it is 1×1)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = xavier_init(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
        self.conv2 = xavier_init(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False))
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor, pool: int) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


def _stripes(n: int, total: int, width: int, count: int) -> Tensor:
    """(n, total) keep-mask with ``count`` zeroed stripes per row, each of a width drawn from [0, width)."""
    position = torch.arange(total)
    keep = torch.ones(n, total, dtype=torch.bool)
    for _ in range(count):
        w = torch.randint(0, width, (n, 1)).clamp(max=total)
        start = (torch.rand(n, 1) * (total - w + 1)).floor().long()
        keep &= ~((position >= start) & (position < start + w))
    return keep


def spec_augment(x: Tensor) -> Tensor:
    """Zero random time and mel stripes of a (B, 1, T, mel) log-mel, per sample (training only).

    Out of place and vectorised; the stripe sizes are the PANNs recipe's. Widths are capped at the
    clip's length, so short clips (fewer than 64 frames) are augmented instead of failing.
    """
    b, _, t, f = x.shape
    keep_t = _stripes(b, t, TIME_DROP, TIME_STRIPES).to(x.device)
    keep_f = _stripes(b, f, FREQ_DROP, FREQ_STRIPES).to(x.device)
    return x * (keep_t[:, None, :, None] & keep_f[:, None, None, :]).to(x.dtype)


class Cnn14Net(nn.Module):
    """The PANNs network from waveform to ``relu(fc1)``; ``fc_audioset`` is kept for strict loading.

    ``embed`` = 2048 is Cnn14, 512 is Cnn14_emb512 (the only difference: fc1's output width).
    """

    def __init__(self, embed: int = 2048, audioset_classes: int = AUDIOSET_CLASSES) -> None:
        super().__init__()
        from torchlibrosa.stft import (  # librosa + numba: seconds
            LogmelFilterBank,
            Spectrogram,
        )

        self.embed = embed
        self.spectrogram_extractor = Spectrogram(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window="hann",
                                                 center=True, pad_mode="reflect", power=2.0, freeze_parameters=True)
        self.logmel_extractor = LogmelFilterBank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX,
                                                 ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True)
        self.bn0 = nn.BatchNorm2d(N_MELS)
        c_in = 1
        for k, width in enumerate(WIDTHS, start=1):
            setattr(self, f"conv_block{k}", ConvBlock(c_in, width))
            c_in = width
        self.fc1 = xavier_init(nn.Linear(WIDTHS[-1], embed))
        self.fc_audioset = xavier_init(nn.Linear(embed, audioset_classes))

    def logmel(self, wave: Tensor) -> Tensor:
        """(B, L) waveform → (B, 1, T, 64) log-mel in dB, always in float32.

        Autocast is switched off here: in float16 the 1e-10 power floor underflows to 0 (log → -inf)
        and the DFT-as-convolution loses precision; the checkpoints were trained in float32.
        """
        with torch.autocast(wave.device.type, enabled=False):
            return self.logmel_extractor(self.spectrogram_extractor(wave.float()))

    def blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{k}") for k in range(1, len(WIDTHS) + 1)]

    def forward(self, wave: Tensor, augment: bool = False) -> tuple[Tensor, tuple[Tensor, ...]]:
        """(B, L) waveform → (relu(fc1) of shape (B, embed), six block outputs averaged to (B, C_k))."""
        x = self.logmel(wave)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel bin: mel is bn0's channel axis
        if augment:
            x = spec_augment(x)
        stages = []
        for k, block in enumerate(self.blocks()):
            x = block(x, pool=2 if k < len(WIDTHS) - 1 else 1)
            stages.append(x.mean(dim=(2, 3)))
            x = F.dropout(x, 0.2, self.training)
        x = x.mean(dim=3)                                  # over mel
        x = x.amax(dim=2) + x.mean(dim=2)                  # max + mean over time
        x = F.dropout(x, 0.5, self.training)
        return F.relu(self.fc1(x)), tuple(stages)

    def audioset_scores(self, wave: Tensor) -> Tensor:
        """The released AudioSet tagger's output: sigmoid(fc_audioset(relu(fc1))), (B, 527).

        Not used for training; it lets a user check that a loaded checkpoint tags a known clip right.
        """
        return torch.sigmoid(self.fc_audioset(self(wave)[0]))
