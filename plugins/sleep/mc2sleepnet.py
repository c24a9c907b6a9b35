"""MC2SleepNet (Kim, ..., Na 2025, arXiv 2502.17470) at the level of one 30-s epoch.

MC2SleepNet reads a raw single-channel EEG epoch with a CNN (the SleePyCo backbone) and the same
epoch's spectrogram with a Transformer, aligns the two epoch embeddings with InfoNCE, and then models a
sequence of ~16 epochs with per-modality Transformers trained by cross-masking. kdbench samples are
single epochs, so this module builds the epoch-level part only: both branches, their fusion into one
classifier, and the InfoNCE alignment as an auxiliary loss read from ``last_alignment_loss``. The
sequence part needs sequences of epochs and is not built. docs/mc2sleepnet.md lists every setting,
where it comes from, and what is left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError

from ._common import LATENT, LinearHead, epoch_length, pooled

#: SleePyCo backbone: (output channels, conv layers) per stage; a max-pool of 5 precedes stages 2-5.
SLEEPYCO_STAGES = ((64, 2), (128, 2), (192, 3), (256, 3), (256, 3))
POOL = 5


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (B, D): row i of each is the positive pair.

    Cosine similarities over temperature form a B x B score matrix; cross-entropy with the diagonal as
    target is taken over rows (a -> b) and over columns (b -> a) and averaged, so swapping the two
    modalities leaves the loss unchanged. The other B - 1 epochs of the batch are the negatives.
    Computed in float32 so mixed precision does not round the exponentials.
    """
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    scores = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target))


class _SamePool(nn.Module):
    """Max-pool of kernel = stride = k after zero-padding the length to a multiple of k (odd pad on the right).

    SleePyCo pads this way so no sample is dropped; every stage keeps ceil(n / k) steps.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        total = -x.shape[-1] % self.k
        return F.max_pool1d(F.pad(x, (total // 2, total - total // 2)), self.k)


class _ChannelGate(nn.Module):
    """Squeeze-and-excitation gate: time-average -> Linear(C, C/r) -> ReLU -> Linear(C) -> sigmoid -> rescale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.mlp(x.mean(-1))).unsqueeze(-1)


def _stage(c_in: int, c_out: int, n_layers: int, pool: bool) -> nn.Sequential:
    """[pool] + n x (Conv1d k3 -> BN -> PReLU), with the SE gate between the last BN and its PReLU."""
    layers: list[nn.Module] = [_SamePool(POOL)] if pool else []
    for i in range(n_layers):
        layers += [nn.Conv1d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm1d(c_out)]
        if i == n_layers - 1:
            layers.append(_ChannelGate(c_out))
        layers.append(nn.PReLU())
    return nn.Sequential(*layers)


class SleePyCoBackbone(nn.Module):
    """SleePyCo's raw-EEG CNN (Lee et al. 2024) plus its feature-pyramid 1 x 1 conv on the last stage.

    Returns every stage's feature map (shallow to deep) and the epoch's signal token: the last stage
    mapped to ``token_dim`` channels and averaged over its time steps (5 at 3000 samples).
    """

    def __init__(self, token_dim: int) -> None:
        super().__init__()
        widths = [1] + [c for c, _ in SLEEPYCO_STAGES]
        self.stages = nn.ModuleList(_stage(widths[i], c, n, pool=i > 0) for i, (c, n) in enumerate(SLEEPYCO_STAGES))
        self.pyramid = nn.Conv1d(widths[-1], token_dim, 1)
        for m in self.modules():        # SleePyCo's init_weights: He-normal (fan_out) convs, BN 1/0
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps, self.pyramid(x).mean(-1)


class LogSpectrogram(nn.Module):
    """|STFT| in dB, (B, 1, n_times) -> (B, n_fft // 2 + 1, frames), framed as MATLAB's ``spectrogram`` does.

    Frame t covers samples [t * hop, t * hop + window): ``torch.stft`` centres a window shorter than
    ``n_fft`` inside each n_fft-long frame, so padding the signal by that offset on both sides lines the
    windows up with the signal's start. Magnitudes equal those of a zero-padded ``n_fft``-point FFT of
    each windowed segment (the centring only changes the phase). The window is a symmetric Hamming window.
    """

    def __init__(self, window: int, hop: int, n_fft: int, floor: float = 1e-10) -> None:
        super().__init__()
        self.hop, self.n_fft, self.floor = hop, n_fft, floor
        self.offset = (n_fft - window) // 2
        self.register_buffer("window", torch.hamming_window(window, periodic=False), persistent=False)

    def frames(self, n_times: int) -> int:
        return 1 + (n_times - self.window.shape[0]) // self.hop

    def forward(self, x: Tensor) -> Tensor:
        pad = self.n_fft - self.window.shape[0]
        x = F.pad(x.float().flatten(1), (self.offset, pad - self.offset))
        spec = torch.stft(x, self.n_fft, self.hop, self.window.shape[0], self.window, center=False,
                          return_complex=True)
        return 20 * torch.log10(spec.abs().clamp_min(self.floor))


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """The Transformer's fixed sin/cos position code, (length, dim): sin on even, cos on odd features."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.zeros(length, dim)
    code[:, 0::2] = torch.sin(position * rate)
    code[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
    return code


class SpectrogramEncoder(nn.Module):
    """Spectrogram frames as tokens: per-bin standardisation -> Linear(bins, d) -> + positions -> post-LN Transformer.

    ``standardise`` is a BatchNorm without affine weights over the frequency bins: in training it
    z-scores each bin with the batch's statistics and keeps running averages, which at test time are
    the training set's per-bin mean and variance, the normalisation the XSleepNet line applies to
    spectrograms. Returns each layer's output (B, frames, d) and the epoch token (mean over frames).
    """

    def __init__(self, bins: int, frames: int, o: MC2SleepNetOptions) -> None:
        super().__init__()
        self.standardise = nn.BatchNorm1d(bins, affine=False)
        self.embed = nn.Linear(bins, o.d_model)
        self.register_buffer("positions", sinusoidal_positions(frames, o.d_model), persistent=False)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(o.d_model, o.n_heads, o.ffn_dim, o.dropout, activation="gelu",
                                       layer_norm_eps=1e-12, batch_first=True, norm_first=False)
            for _ in range(o.n_layers))

    def forward(self, spec: Tensor) -> tuple[list[Tensor], Tensor]:
        x = self.embed(self.standardise(spec).transpose(1, 2)) + self.positions
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs, x.mean(1)


class MC2SleepNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sfreq: float = Field(100.0, gt=0, description="EEG sampling rate in Hz (SleePyCo convention: 100); sets the "
                                                  "STFT window and hop in samples")
    stft_window_s: float = Field(2.0, gt=0, description="STFT Hamming window length in seconds (XSleepNet "
                                                        "convention, unverified for MC2SleepNet)")
    stft_hop_s: float = Field(1.0, gt=0, description="STFT hop in seconds, i.e. 50 % overlap (unverified)")
    n_fft: int = Field(256, ge=2, description="FFT points; n_fft // 2 + 1 frequency bins (unverified: 256 -> 129)")
    d_model: int = Field(128, ge=2, description="width of the spectrogram Transformer and of both modality tokens "
                                                "(MC2SleepNet code: 128)")
    n_layers: int = Field(4, ge=1, description="spectrogram Transformer layers (MC2SleepNet code: 4)")
    n_heads: int = Field(8, ge=1, description="attention heads; must divide d_model (MC2SleepNet code: 8)")
    ffn_dim: int = Field(1024, ge=1, description="Transformer feed-forward width, GELU (MC2SleepNet code: 1024)")
    dropout: float = Field(0.1, ge=0, lt=1, description="Transformer dropout (MC2SleepNet code: 0.1)")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature of the epoch-level alignment "
                                                      "(unverified: the paper's value was not available)")
    alignment_weight: float = Field(1.0, ge=0, description="weight of the InfoNCE alignment added to the "
                                                           "cross-entropy in teacher training (unverified: 1)")
    embedding_dim: int = Field(LATENT, ge=1, description="width of the linear projection of the fused "
                                                         "signal + spectrogram tokens that the classifier reads")


class _Latest:
    """The last forward's alignment loss; a copy starts empty because an autograd graph cannot be deep-copied."""

    value: Tensor | None = None

    def __deepcopy__(self, memo: dict) -> _Latest:
        return _Latest()


class MC2SleepNetTeacher(Model):
    """MC2SleepNet (Kim et al. 2025), epoch level: SleePyCo CNN on raw EEG + Transformer on its spectrogram.

    The two 128-d modality tokens are concatenated (256), projected to the 512-d embedding and
    classified. ``forward`` also stores the symmetric InfoNCE between the two tokens in
    ``last_alignment_loss`` (kdbench's teacher training minimises cross-entropy only and does not add
    it). Stages (pooled over time): the five CNN stages (64, 128, 192, 256, 256) and the fused tokens
    (2 x d_model).
    """

    name = "mc2sleepnet"
    Options = MC2SleepNetOptions

    def __init__(self, options: MC2SleepNetOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        o = options
        self.n_times = epoch_length(info, self.name)
        window, hop = round(o.stft_window_s * o.sfreq), round(o.stft_hop_s * o.sfreq)
        if window < 2 or hop < 1:
            raise KdbenchError(f"{self.name}: a {o.stft_window_s:g}-s window and {o.stft_hop_s:g}-s hop at "
                               f"{o.sfreq:g} Hz give {window} and {hop} samples; raise teacher.sfreq or the durations")
        if o.n_fft < window:
            raise KdbenchError(f"{self.name}: n_fft={o.n_fft} is shorter than the {window}-sample STFT window; "
                               f"set teacher.n_fft >= {window}")
        if self.n_times < window:
            raise KdbenchError(f"{self.name}: an epoch of {self.n_times} samples is shorter than one "
                               f"{window}-sample STFT window; give 30-s epochs (3000 samples at 100 Hz)")
        if o.d_model % o.n_heads or o.d_model % 2:
            raise KdbenchError(f"{self.name}: d_model={o.d_model} must be even and divisible by "
                               f"n_heads={o.n_heads}")
        self.signal = SleePyCoBackbone(o.d_model)
        self.spectrogram = LogSpectrogram(window, hop, o.n_fft)
        self.spectral = SpectrogramEncoder(o.n_fft // 2 + 1, self.spectrogram.frames(self.n_times), o)
        self.head = LinearHead(2 * o.d_model, o.embedding_dim, info.num_classes)
        self._latest = _Latest()

    @property
    def last_alignment_loss(self) -> Tensor | None:
        """InfoNCE between the signal and spectrogram tokens of the last forward (None before the first).

        It keeps the autograd graph of that forward, so a trainer can add it to the cross-entropy of the
        same batch; the next forward replaces it.
        """
        return self._latest.value

    def training_losses(self, output: ModelOutput, batch) -> dict[str, Tensor]:
        """The InfoNCE alignment of this batch's signal and spectrogram tokens, weighted (teacher training)."""
        loss = self.last_alignment_loss
        if loss is None or self.options.alignment_weight == 0:
            return {}
        return {"alignment": self.options.alignment_weight * loss}

    def forward(self, x: Tensor) -> ModelOutput:
        if tuple(x.shape[1:]) != (1, self.n_times):
            raise KdbenchError(f"{self.name}: expected input (batch, 1, {self.n_times}), got {tuple(x.shape)}")
        maps, signal_token = self.signal(x)
        _, spectral_token = self.spectral(self.spectrogram(x))
        self._latest.value = info_nce(signal_token, spectral_token, self.options.temperature)
        fused = torch.cat((signal_token, spectral_token), 1)
        logits, embedding = self.head(fused)
        return ModelOutput(logits, embedding, (*(pooled(m) for m in maps), fused))
