"""MC2SleepNet (Kim, ..., Na 2025, arXiv 2502.17470): per 30-s epoch, or over a sequence of epochs.

MC2SleepNet reads a raw single-channel EEG epoch with a CNN (the SleePyCo backbone) and the same
epoch's spectrogram with a Transformer, aligns the two epoch embeddings with InfoNCE, and then models a
sequence of epochs with per-modality Transformers trained by cross-masking. With a one-epoch input
``(1, n_times)`` this module is the epoch-level model: both branches, their fusion into one classifier, and
the InfoNCE alignment as an auxiliary loss. With a sequence ``(L, 1, n_times)`` (a sleep dataset's
``context``) it adds the sequence part: per-modality sequence Transformers whose layers also attend to the
other modality, a classifier of the centre epoch, and in training the cross-masking reconstruction loss.
docs/mc2sleepnet.md lists every setting, where it comes from, and what is left out.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.options import PluginOptions

from .common import LATENT, LinearHead, pooled

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


class SequenceLayer(nn.Module):
    """One layer of MC2SleepNet's sequence encoders, over epoch tokens (B, L, d).

    Self-attention, then (given the other modality's tokens) cross-attention to them, then a GELU
    feed-forward network; each sub-layer adds its input back and is followed by LayerNorm (post-LN, eps
    1e-12). As in the MC2 code, the projections have no bias, dropout acts on each sub-layer's output (and
    inside the feed-forward network after the GELU), and the feed-forward weights start Xavier-uniform.
    ``pad`` / ``context_pad`` (B, L) mark epochs no query may attend to (True = padding).
    """

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, bias=False, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, bias=False, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn, bias=False), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn, d, bias=False))
        for linear in (self.ffn[0], self.ffn[3]):
            nn.init.xavier_uniform_(linear.weight)
        self.norm_self, self.norm_cross, self.norm_ffn = (nn.LayerNorm(d, eps=1e-12) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor | None, context: Tensor | None = None,
                context_pad: Tensor | None = None) -> Tensor:
        x = self.norm_self(x + self.dropout(self.self_attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]))
        if context is not None:
            attended = self.cross_attn(x, context, context, key_padding_mask=context_pad, need_weights=False)[0]
            x = self.norm_cross(x + self.dropout(attended))
        return self.norm_ffn(x + self.dropout(self.ffn(x)))


class SequenceEncoder(nn.Module):
    """A stack of ``SequenceLayer``; every layer attends to the same ``context`` (the other modality's input)."""

    def __init__(self, layers: int, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SequenceLayer(d, heads, ffn, dropout) for _ in range(layers))

    def forward(self, x: Tensor, pad: Tensor | None, context: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pad, context, pad)
        return x


class CrossMasking(nn.Module):
    """The masking module: masked epochs' tokens become a learned mask token, positions are added, and
    ``masking_layers`` layers (self-attention + cross-attention to the intact other modality) start the
    rebuilding, which the masked modality's sequence encoder finishes. One module serves both directions."""

    def __init__(self, layers: int, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.empty(d).normal_(std=0.02))
        self.layers = nn.ModuleList(SequenceLayer(d, heads, ffn, dropout) for _ in range(layers))

    def forward(self, tokens: Tensor, masked: Tensor, positions: Tensor, context: Tensor,
                pad: Tensor | None) -> Tensor:
        x = torch.where(masked.unsqueeze(-1), self.token.to(tokens.dtype), tokens) + positions
        for layer in self.layers:
            x = layer(x, pad, context, pad)
        return x


def masked_count(length: int, ratio: float) -> int:
    """Epochs of an L-epoch sequence that cross-masking hides: ratio * L rounded half up, at least 1, at most L - 1."""
    return min(length - 1, max(1, math.floor(ratio * length + 0.5)))


def choose_masked(batch: int, length: int, count: int, device: torch.device | str = "cpu") -> Tensor:
    """PatchShuffle-style choice: per sample, the first ``count`` positions of a random permutation of the L
    epochs, (B, count), drawn from torch's RNG (of ``device``), so ``torch.manual_seed`` repeats it."""
    return torch.rand(batch, length, device=device).argsort(1)[:, :count]


class MC2SleepNetOptions(PluginOptions):
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
    # sequence mode only (a teacher input of L > 1 epochs); unused, and nothing is built, for one epoch
    sequence_layers: int = Field(4, ge=1, description="sequence mode: layers of each modality's sequence "
                                                      "Transformer (MC2SleepNet code: 4)")
    sequence_heads: int = Field(8, ge=1, description="sequence mode: attention heads of the sequence Transformers; "
                                                     "must divide d_model (MC2SleepNet code: 8)")
    sequence_ffn_dim: int = Field(1024, ge=1, description="sequence mode: feed-forward width of the sequence "
                                                          "Transformers and the masking module, GELU (MC2SleepNet "
                                                          "code: 1024)")
    masking_layers: int = Field(1, ge=1, description="sequence mode: layers of the cross-masking module "
                                                     "(MC2SleepNet code: 1)")
    masking_heads: int = Field(4, ge=1, description="sequence mode: attention heads of the cross-masking module; "
                                                    "must divide d_model (MC2SleepNet code: 4)")
    mask_ratio: float = Field(0.25, gt=0, lt=1, description="sequence mode: share of a sequence's epochs masked "
                                                            "in one modality, rounded, at least 1 (MC2SleepNet "
                                                            "code: 0.25)")
    reconstruction_weight: float = Field(1.0, ge=0, description="sequence mode: weight of the cross-masking "
                                                                "reconstruction loss added in teacher training "
                                                                "(unverified: 1); 0 skips the masked passes")
    reconstruction_reduction: Literal["sum", "mean"] = Field(
        "mean", description="sequence mode: L1 over the rebuilt tokens averaged per element (kdbench: trained "
                            "jointly with the cross-entropy) or summed (MC2SleepNet code, which trains it in a "
                            "stage of its own); the two modalities' losses are then averaged")
    reconstruction_tokens: Literal["masked", "all"] = Field(
        "masked", description="sequence mode: L1 over the masked epochs only, or over every epoch of the rebuilt "
                              "sequence (what the published MC2SleepNet code compares)")


class _Latest:
    """The last forward's auxiliary losses; a copy starts empty because an autograd graph cannot be deep-copied."""

    value: Tensor | None = None             # InfoNCE alignment
    reconstruction: Tensor | None = None    # cross-masking L1 (sequence mode, training only)

    def __deepcopy__(self, memo: dict) -> _Latest:
        return _Latest()


def _input_layout(info: DatasetInfo, who: str) -> tuple[int, int]:
    """(epochs L, n_times) of the teacher input: ``(1, n_times)`` is L = 1; ``(L, 1, n_times)`` needs an odd L >= 3."""
    shape = tuple(info.teacher_input_shape)
    if len(shape) == 2 and shape[0] == 1 and shape[1] >= 1:
        return 1, int(shape[1])
    if len(shape) == 3 and shape[1] == 1 and shape[2] >= 1:
        if shape[0] < 3 or shape[0] % 2 == 0:
            raise KdbenchError(f"teacher {who!r} classifies the centre epoch of a sequence, so it needs an odd "
                               f"number of epochs >= 3 (dataset.context = c gives 2c + 1); the dataset's teacher "
                               f"input has shape {shape}")
        return int(shape[0]), int(shape[2])
    raise KdbenchError(f"teacher {who!r} reads one EEG channel, shape (1, n_times), or a sequence of epochs "
                       f"(L, 1, n_times); the dataset's teacher input has shape {shape}")


class MC2SleepNetTeacher(Model):
    """MC2SleepNet (Kim et al. 2025): SleePyCo CNN on raw EEG + Transformer on its spectrogram, per epoch or sequence.

    Epoch level (input ``(B, 1, n_times)``): the two 128-d modality tokens are concatenated (256),
    projected to the 512-d embedding and classified. Stages (pooled over time): the five CNN stages
    (64, 128, 192, 256, 256) and the fused tokens (2 x d_model).

    Sequence level (input ``(B, L, 1, n_times)``, odd L): both branches encode all B x L epochs; each
    modality's token sequence goes through its sequence Transformer, whose layers also attend to the
    other modality's tokens; the centre epoch's two outputs are concatenated, projected to 512 and
    classified. All-zero epochs (a dataset's padding beyond the recording) are not encoded and no
    attention reads them. Stages: the centre epoch's five CNN stages, its fused epoch tokens, its fused
    sequence outputs. In training, cross-masking rebuilds a masked quarter of one modality's epochs from
    the other and stores the L1 loss in ``last_reconstruction_loss``.

    Every forward stores the symmetric InfoNCE between the two tokens of each epoch in
    ``last_alignment_loss``; ``training_losses`` hands both losses, weighted, to kdbench's teacher training.
    """

    name = "mc2sleepnet"
    Options = MC2SleepNetOptions

    def __init__(self, options: MC2SleepNetOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        o = options
        self.sequence_length, self.n_times = _input_layout(info, self.name)
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
        if self.sequence_length > 1:
            for option in ("sequence_heads", "masking_heads"):
                if o.d_model % getattr(o, option):
                    raise KdbenchError(f"{self.name}: d_model={o.d_model} must be divisible by "
                                       f"{option}={getattr(o, option)}")
            stack = lambda layers, heads: SequenceEncoder(layers, o.d_model, heads, o.sequence_ffn_dim, o.dropout)
            self.sequence_signal = stack(o.sequence_layers, o.sequence_heads)
            self.sequence_spectral = stack(o.sequence_layers, o.sequence_heads)
            self.masking = CrossMasking(o.masking_layers, o.d_model, o.masking_heads, o.sequence_ffn_dim, o.dropout)
            self.register_buffer("sequence_positions", sinusoidal_positions(self.sequence_length, o.d_model),
                                 persistent=False)
        self.head = LinearHead(2 * o.d_model, o.embedding_dim, info.num_classes)
        self._latest = _Latest()

    @property
    def last_alignment_loss(self) -> Tensor | None:
        """InfoNCE between the signal and spectrogram tokens of the last forward (None before the first).

        It keeps the autograd graph of that forward, so a trainer can add it to the cross-entropy of the
        same batch; the next forward replaces it.
        """
        return self._latest.value

    @property
    def last_reconstruction_loss(self) -> Tensor | None:
        """The cross-masking L1 loss of the last forward: set by a sequence-mode forward in training mode
        (with ``reconstruction_weight`` > 0), None after any other forward."""
        return self._latest.reconstruction

    def training_losses(self, output: ModelOutput, batch) -> dict[str, Tensor]:
        """This batch's weighted InfoNCE alignment and, in sequence mode, cross-masking reconstruction."""
        o, terms = self.options, {}
        if self.last_alignment_loss is not None and o.alignment_weight != 0:
            terms["alignment"] = o.alignment_weight * self.last_alignment_loss
        if self.last_reconstruction_loss is not None and o.reconstruction_weight != 0:
            terms["reconstruction"] = o.reconstruction_weight * self.last_reconstruction_loss
        return terms

    def forward(self, x: Tensor) -> ModelOutput:
        if self.sequence_length > 1:
            return self._forward_sequence(x)
        if tuple(x.shape[1:]) != (1, self.n_times):
            raise KdbenchError(f"{self.name}: expected input (batch, 1, {self.n_times}), got {tuple(x.shape)}")
        maps, signal_token = self.signal(x)
        _, spectral_token = self.spectral(self.spectrogram(x))
        self._latest.value = info_nce(signal_token, spectral_token, self.options.temperature)
        self._latest.reconstruction = None
        fused = torch.cat((signal_token, spectral_token), 1)
        logits, embedding = self.head(fused)
        return ModelOutput(logits, embedding, (*(pooled(m) for m in maps), fused))

    # ------------------------------------------------------------- sequence mode

    def _forward_sequence(self, x: Tensor) -> ModelOutput:
        length, centre = self.sequence_length, self.sequence_length // 2
        if tuple(x.shape[1:]) != (length, 1, self.n_times):
            raise KdbenchError(f"{self.name}: expected input (batch, {length}, 1, {self.n_times}), "
                               f"got {tuple(x.shape)}")
        batch = x.shape[0]
        flat = x.reshape(batch * length, 1, self.n_times)
        real = flat.flatten(1).ne(0).any(1).view(batch, length)   # all-zero epochs are padding ...
        real[:, centre] = True                                       # ... except the item's own epoch
        rows = real.flatten().nonzero().squeeze(1)
        maps, signal = self.signal(flat[rows])
        _, spectral = self.spectral(self.spectrogram(flat[rows]))
        self._latest.value = info_nce(signal, spectral, self.options.temperature)

        def scatter(tokens: Tensor) -> Tensor:   # (real epochs, d) -> (B, L, d), zeros at padding
            return tokens.new_zeros(batch * length, tokens.shape[1]).index_copy(0, rows, tokens).view(batch, length, -1)

        signal, spectral = scatter(signal), scatter(spectral)
        pad = None if bool(real.all()) else ~real
        positions = self.sequence_positions.to(signal.dtype)
        signal_in, spectral_in = signal + positions, spectral + positions
        signal_out = self.sequence_signal(signal_in, pad, spectral_in)
        spectral_out = self.sequence_spectral(spectral_in, pad, signal_in)
        fused = torch.cat((signal_out[:, centre], spectral_out[:, centre]), 1)
        logits, embedding = self.head(fused)
        self._latest.reconstruction = (
            self._reconstruction(signal, spectral, signal_in, spectral_in, real, pad)
            if self.training and self.options.reconstruction_weight > 0 else None)
        centre_rows = (real.flatten().cumsum(0) - 1).view(batch, length)[:, centre]
        stages = (*(pooled(m[centre_rows]) for m in maps),
                  torch.cat((signal[:, centre], spectral[:, centre]), 1), fused)
        return ModelOutput(logits, embedding, stages)

    def _reconstruction(self, signal: Tensor, spectral: Tensor, signal_in: Tensor, spectral_in: Tensor,
                        real: Tensor, pad: Tensor | None) -> Tensor:
        """Cross-masking: mask each modality in turn, rebuild it from the other, L1 against its own tokens.

        Per modality, ``masked_count`` epochs per sample (``choose_masked``) become the mask token; the
        masking module and then that modality's sequence encoder, both attending to the intact other
        modality, rebuild the sequence. The L1 distance to the original tokens (before positions) is
        taken over the masked real epochs (or every real epoch) and summed (or averaged); the two
        modalities' losses are averaged. Padding epochs never count.
        """
        o = self.options
        batch, length = real.shape
        count = masked_count(length, o.mask_ratio)
        losses = []
        for tokens, encoder, context in ((signal, self.sequence_signal, spectral_in),
                                         (spectral, self.sequence_spectral, signal_in)):
            chosen = choose_masked(batch, length, count, tokens.device)
            masked = torch.zeros_like(real).scatter_(1, chosen, True)
            rebuilt = encoder(self.masking(tokens, masked, self.sequence_positions.to(tokens.dtype), context, pad),
                              pad, context)
            counted = (masked if o.reconstruction_tokens == "masked" else torch.ones_like(masked)) & real
            error = (rebuilt.float() - tokens.float()).abs()[counted]
            losses.append(error.sum() if o.reconstruction_reduction == "sum" else error.sum() / max(error.numel(), 1))
        return (losses[0] + losses[1]) / 2
