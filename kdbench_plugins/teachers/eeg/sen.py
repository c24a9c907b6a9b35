"""Single-channel SEN-DAL (Jia, Cai & Jiao, IEEE Sensors J. 2022), the SACD paper's "Modified-SEN".

SEN-DAL fuses a 2-D band-power topomap of 20 EEG channels with a DeepSleepNet-style two-stream 1-D CNN
of the EOG through a squeeze-and-excitation (SE) gate, and trains a domain-adversarial subject head
beside the label head. The SACD paper feeds it one EEG channel and no EOG, keeping both heads; one
channel cannot draw a topomap, so here SEN-DAL's own two-stream 1-D CNN reads the EEG channel and the
SE fusion gates the two streams (small and large filters) in place of the two modalities. Layer
sizes follow the authors' Keras code (methods.md §2); docs/teachers.md lists every deviation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.options import PluginOptions

from .common import LATENT, epoch_length, pooled


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.neg() * ctx.lam, None


class GradientReversal(nn.Module):
    """Identity forward; backward multiplies the gradient by -lambda (Ganin & Lempitsky 2015).

    Placed before the domain head, it lets the head learn to tell subjects apart while pushing the
    shared feature extractor to make them indistinguishable.
    """

    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = float(lam)

    def forward(self, x: Tensor) -> Tensor:
        return _ReverseGradient.apply(x, self.lam)

    def extra_repr(self) -> str:
        return f"lambda={self.lam:g}"


class _SameConv(nn.Conv1d):
    """Conv1d with Keras/TensorFlow 'same' padding (ceil(n / stride) outputs, the odd pad on the right).

    Keras pads strided and even-kernel convolutions asymmetrically, which no fixed ``padding`` of
    ``nn.Conv1d`` reproduces; padding per call keeps SEN-DAL's output lengths for any input length.
    """

    def forward(self, x: Tensor) -> Tensor:
        n, (k,), (s,) = x.shape[-1], self.kernel_size, self.stride
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        return super().forward(F.pad(x, (total // 2, total - total // 2)))


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int, bias: bool, slope: float) -> nn.Sequential:
    # Keras BatchNormalization(momentum=0.9, epsilon=1e-3) = torch momentum 0.1 (the default), eps 1e-3
    return nn.Sequential(_SameConv(c_in, c_out, kernel, stride, bias=bias), nn.BatchNorm1d(c_out, eps=1e-3),
                         nn.LeakyReLU(slope))


class _Stream(nn.Module):
    """One DeepSleepNet-style stream: wide strided conv, pool, dropout, three narrow convs, pool.

    Pools have kernel = stride, so ``ceil_mode`` gives Keras 'same' pooling (ceil(n / k) windows).
    """

    def __init__(self, kernel: int, stride: int, pool1: int, deep_kernel: int, pool2: int, filters: int,
                 dropout: float, slope: float) -> None:
        super().__init__()
        self.pools = (pool1, pool2)
        self.first = _conv_block(1, filters, kernel, stride, False, slope)        # no bias, as in the code
        self.pool1 = nn.MaxPool1d(pool1, pool1, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)
        self.deep = nn.ModuleList([_conv_block(filters if i == 0 else 2 * filters, 2 * filters, deep_kernel, 1,
                                               True, slope) for i in range(3)])
        self.pool2 = nn.MaxPool1d(pool2, pool2, ceil_mode=True)
        self.stride = stride

    def length(self, n_times: int) -> int:
        """Output steps for an input of ``n_times`` samples."""
        return math.ceil(math.ceil(math.ceil(n_times / self.stride) / self.pools[0]) / self.pools[1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(first conv output, second conv output, stream output)."""
        first = self.first(x)
        y = self.deep[0](self.dropout(self.pool1(first)))
        second = y
        for block in self.deep[1:]:
            y = block(y)
        return first, second, self.pool2(y)


class _StreamSEFusion(nn.Module):
    """SEN-DAL's SE fusion with the two streams in the place of its two modalities.

    Both streams are averaged over time and concatenated; Dense(c / r) -> ReLU -> Dense(c) -> sigmoid
    gives one gate per channel, split back per stream to rescale that stream's channels.
    """

    def __init__(self, widths: tuple[int, int], reduction: int) -> None:
        super().__init__()
        c = sum(widths)
        self.widths = widths
        self.excite = nn.Sequential(nn.Linear(c, c // reduction), nn.ReLU(), nn.Linear(c // reduction, c),
                                    nn.Sigmoid())

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        gates = self.excite(torch.cat((a.mean(-1), b.mean(-1)), 1))
        ga, gb = gates.split(self.widths, 1)
        return a * ga.unsqueeze(-1), b * gb.unsqueeze(-1)


class SENOptions(PluginOptions):
    sfreq: float = Field(100.0, ge=16, description="EEG sampling rate in Hz (SEN-DAL: 128); first filters: "
                                                   "small k = Fs/2, stride Fs/16; large k = 4 Fs, stride Fs/2")
    filters: int = Field(64, ge=1, description="first-conv filters per stream; the deep convs have twice as many "
                                               "(SEN-DAL time_filters_nums = 64)")
    reduction_ratio: int = Field(2, ge=1, description="SE fusion reduction r (SEN-DAL run.py: 2)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout after each stream's first pool (SEN-DAL: 0.5)")
    negative_slope: float = Field(0.3, ge=0, description="LeakyReLU slope (Keras default 0.3, as SEN-DAL uses it)")
    head_width: int = Field(128, ge=1, description="hidden width of the label and domain heads (SEN-DAL: 128)")
    num_domains: int = Field(60, ge=2, description="domain-head outputs = training subjects (SEN-DAL: 60 per fold)")
    grl_lambda: float = Field(0.001, ge=0, description="gradient-reversal factor before the domain head "
                                                       "(SEN-DAL: 0.001)")
    domain_weight: float = Field(1.0, ge=0, description="weight of the subject cross-entropy added to the label "
                                                        "loss in teacher training (SEN-DAL sums the two: 1)")
    embedding_dim: int = Field(LATENT, ge=1, description="width of the linear projection of the flattened fused "
                                                         "streams that both heads read (SACD: 512)")


class SENTeacher(Model):
    """Single-channel SEN-DAL: two-stream 1-D CNN + SE fusion, a label head and a gradient-reversed domain head.

    ``forward`` returns the label head's logits; ``domain_logits(embedding)`` applies the gradient
    reversal and the subject head for a trainer that has subject ids (kdbench's teacher training does
    not yet, so it trains the label head only). Stages (pooled over time): both streams' first conv
    (2 x filters), their second conv (4 x filters) and the SE-fused stream outputs (4 x filters).
    """

    name = "sen"
    Options = SENOptions

    def __init__(self, options: SENOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        n_times, fs, f = epoch_length(info, self.name), options.sfreq, options.filters
        slope, drop = options.negative_slope, options.dropout
        self.small = _Stream(int(fs // 2), int(fs // 16), 8, 8, 4, f, drop, slope)
        self.large = _Stream(int(fs * 4), int(fs // 2), 4, 6, 2, f, drop, slope)
        if 4 * f < options.reduction_ratio:
            raise KdbenchError(f"sen: reduction_ratio={options.reduction_ratio} leaves no SE units for "
                               f"{4 * f} channels; lower it or raise filters")
        self.fusion = _StreamSEFusion((2 * f, 2 * f), options.reduction_ratio)
        native = 2 * f * (self.small.length(n_times) + self.large.length(n_times))
        self.project = nn.Linear(native, options.embedding_dim)
        self.label_head = nn.Sequential(nn.Linear(options.embedding_dim, options.head_width), nn.ReLU(),
                                        nn.Linear(options.head_width, info.num_classes))
        self.domain_head = nn.Sequential(GradientReversal(options.grl_lambda),
                                         nn.Linear(options.embedding_dim, options.head_width), nn.ReLU(),
                                         nn.Linear(options.head_width, options.num_domains))
        self._init_like_keras()

    def _init_like_keras(self) -> None:
        """he_normal convolutions and glorot_uniform dense layers with zero biases, as in the Keras code."""
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
            if isinstance(m, (nn.Conv1d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> ModelOutput:
        s1, s2, small = self.small(x)
        l1, l2, large = self.large(x)
        small, large = self.fusion(small, large)
        embedding = self.project(torch.cat((small.flatten(1), large.flatten(1)), 1))
        stages = tuple(torch.cat((pooled(a), pooled(b)), 1) for a, b in ((s1, l1), (s2, l2), (small, large)))
        return ModelOutput(self.label_head(embedding), embedding, stages)

    def training_losses(self, output: ModelOutput, batch) -> dict[str, Tensor]:
        """The domain-adversarial term: subject cross-entropy through the gradient-reversed head, on the
        samples whose subject is known (``batch.group >= 0``); none when no sample has one."""
        known = batch.group >= 0
        if self.options.domain_weight == 0 or not bool(known.any()):
            return {}
        groups = batch.group[known]
        if int(groups.max()) >= self.options.num_domains:
            raise KdbenchError(f"teacher 'sen' has {self.options.num_domains} domain outputs but the data has subject id "
                               f"{int(groups.max())}; set --set teacher.num_domains=N with N at least the number of "
                               f"training subjects")
        logits = self.domain_logits(output.embedding[known])
        return {"domain": self.options.domain_weight * F.cross_entropy(logits.float(), groups)}

    def domain_logits(self, embedding: Tensor) -> Tensor:
        """Subject logits for ``embedding`` (a forward's ``.embedding``), through the gradient reversal.

        Training on cross-entropy of these against subject ids, added to the label loss with equal
        weight as SEN-DAL does, makes the encoder subject-invariant; inference ignores this head.
        """
        return self.domain_head(embedding)
