"""AttnSleep and DeepSleepNet teachers, wrapping braindecode 1.8.1's implementations.

braindecode's own ``forward`` runs unchanged (it is the reference for what each network computes);
the teacher adds the 512-d linear embedding and the classifier (see ``_common``) and reads its stages
from forward hooks. See docs/teachers.md for every choice.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError, first_line
from kdbench.options import PluginOptions

from .common import LATENT, LinearHead, Taps, braindecode_models, epoch_length, pooled

# --------------------------------------------------------------------------- AttnSleep

#: (kernel, stride, padding) of the conv/pool layers that set the length of each MRCNN branch, in the
#: order braindecode 1.8.1 (and the original code) apply them; the "k" of branch 2 is 7, or 6 at 125 Hz.
_BRANCH_SMALL = ((50, 6, 24), (8, 2, 4), (8, 1, 4), (8, 1, 4), (4, 4, 2))
_BRANCH_LARGE = ((400, 50, 200), (4, 2, 2), ("k", 1, 3), ("k", 1, 3), (2, 2, 1))


def _length(n: int, layers, k: int) -> int:
    for kernel, stride, padding in layers:
        n = (n + 2 * padding - (k if kernel == "k" else kernel)) // stride + 1
        if n < 1:
            return 0
    return n


def attnsleep_d_model(n_times: int, sfreq: float) -> int:
    """Time steps the MRCNN gives for ``n_times`` samples: braindecode requires d_model to equal it."""
    k = 6 if sfreq == 125 else 7
    small, large = _length(n_times, _BRANCH_SMALL, k), _length(n_times, _BRANCH_LARGE, k)
    return small + large if small and large else 0


class AttnSleepOptions(PluginOptions):
    sfreq: float = Field(100.0, gt=0, description="EEG sampling rate in Hz (paper: 100 Sleep-EDF, 125 SHHS); "
                                                  "d_model follows from it and the epoch length")
    n_tce: int = Field(2, ge=1, description="temporal context encoder layers (paper: N = 2)")
    n_attn_heads: int = Field(5, ge=1, description="attention heads; must divide d_model (80 at 3000 samples/100 Hz)")
    d_ff: int = Field(120, ge=1, description="TCE feed-forward width (paper: 120)")
    after_reduced_cnn_size: int = Field(30, ge=16, description="AFR output channels (paper: 30; >= 16 for its SE)")
    drop_prob: float = Field(0.1, ge=0, lt=1, description="TCE dropout (paper: 0.1; the MRCNN's 0.5 is fixed)")
    original_init: bool = Field(True, description="initialise as the authors' code does: conv weights N(0, 0.02), "
                                                  "BatchNorm weights N(1, 0.02), biases 0 (braindecode does not)")
    embedding_dim: int = Field(LATENT, ge=1, description="width of the linear projection of the flattened TCE "
                                                         "output that the classifier reads (SACD: 512)")


class AttnSleepTeacher(Model):
    """AttnSleep (Eldele et al. 2021) on one EEG channel: MRCNN + AFR + transformer TCE, via braindecode.

    Stages (pooled over time): both MRCNN branches' outputs concatenated (256), the AFR output (30) and
    the TCE output (30). The embedding is a linear map of the flattened TCE output (30 x d_model).
    """

    name = "attnsleep"
    Options = AttnSleepOptions

    def __init__(self, options: AttnSleepOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        n_times, sfreq = epoch_length(info, self.name), options.sfreq
        d_model = attnsleep_d_model(n_times, sfreq)
        if d_model == 0:
            raise KdbenchError(f"attnsleep: an epoch of {n_times} samples is too short for its CNN; "
                               f"give 30-s epochs (3000 samples at 100 Hz, 3750 at 125 Hz)")
        if d_model % options.n_attn_heads:
            divisors = [h for h in range(1, 17) if d_model % h == 0]
            raise KdbenchError(f"attnsleep: {n_times} samples at {sfreq:g} Hz give d_model={d_model}, which "
                               f"n_attn_heads={options.n_attn_heads} does not divide; set teacher.n_attn_heads to "
                               f"one of {divisors}, or use 3000 samples at 100 Hz or 3750 at 125 Hz (5 heads)")
        models = braindecode_models()
        with warnings.catch_warnings():
            # braindecode warns for any setting but (30 s, 100 Hz, d_model 80) and (30 s, 125 Hz, 100);
            # d_model was derived above, so the warning only restates the documented choice.
            warnings.filterwarnings("ignore", message="This model was designed originally", category=UserWarning)
            self.core = models.AttnSleep(sfreq=sfreq, n_times=n_times, n_chans=1, d_model=d_model,
                                         n_tce=options.n_tce, d_ff=options.d_ff, n_attn_heads=options.n_attn_heads,
                                         drop_prob=options.drop_prob,
                                         after_reduced_cnn_size=options.after_reduced_cnn_size, return_feats=True)
        if options.original_init:
            _authors_init(self.core)
        self.d_model, self.afr_channels = d_model, options.after_reduced_cnn_size
        mrcnn = self.core.feature_extractor[0]
        self._taps = Taps({"small": mrcnn.features1, "large": mrcnn.features2, "afr": mrcnn})
        self.head = LinearHead(self.core.len_last_layer, options.embedding_dim, info.num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        flat = self.core(x)                                         # (B, afr_channels * d_model)
        taps = self._taps.take()
        tce = flat.view(flat.shape[0], self.afr_channels, self.d_model)
        stages = (torch.cat((pooled(taps["small"]), pooled(taps["large"])), 1), pooled(taps["afr"]), pooled(tce))
        logits, embedding = self.head(flat)
        return ModelOutput(logits, embedding, stages)


def _authors_init(module: nn.Module) -> None:
    """AttnSleep's ``weights_init_normal``: every Conv1d (causal ones too) and BatchNorm1d of the core."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- DeepSleepNet


class DeepSleepNetOptions(PluginOptions):
    sfreq: float = Field(100.0, ge=16, description="EEG sampling rate in Hz; the first filters follow the paper: "
                                                  "small k = Fs/2, stride Fs/16; large k = 4 Fs, stride Fs/2")
    drop_prob: float = Field(0.5, ge=0, lt=1, description="dropout throughout (paper: 0.5)")
    bilstm_hidden_size: int = Field(512, ge=1, description="BiLSTM hidden size per direction (paper: 512)")
    bilstm_num_layers: int = Field(2, ge=1, description="stacked BiLSTM layers (paper: 2)")
    large_activation: Literal["relu", "elu"] = Field(
        "relu", description="activation of the large-filter CNN (paper: relu; braindecode's default: elu)")
    embedding_dim: int = Field(LATENT, ge=1, description="width of the linear projection of the 2 x hidden "
                                                         "sequence-residual feature that the classifier reads")


class DeepSleepNetTeacher(Model):
    """DeepSleepNet (Supratak et al. 2017) on one EEG channel: two-stream CNN + BiLSTM residual, via braindecode.

    braindecode runs the BiLSTM on a sequence of one epoch, so the sequence part is a per-epoch
    nonlinear transform with a residual shortcut. Stages (pooled over time): both streams' first conv
    layer (128), both streams' CNN output (256), the BiLSTM + shortcut feature (2 x hidden = 1024).
    """

    name = "deepsleepnet"
    Options = DeepSleepNetOptions

    def __init__(self, options: DeepSleepNetOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        n_times, fs = epoch_length(info, self.name), options.sfreq
        small_k, small_s, large_k, large_s = int(fs / 2), int(fs / 16), int(4 * fs), int(fs / 2)
        models = braindecode_models()
        try:
            self.core = models.DeepSleepNet(
                n_outputs=info.num_classes, return_feats=True, n_chans=1, n_times=n_times, sfreq=fs,
                activation_large=nn.ReLU if options.large_activation == "relu" else nn.ELU,
                drop_prob=options.drop_prob, bilstm_hidden_size=options.bilstm_hidden_size,
                bilstm_num_layers=options.bilstm_num_layers,
                # padding (k - stride) // 2 keeps ceil(n / stride) steps: braindecode's 22 and 175 at 100 Hz
                small_first_kernel_size=small_k, small_first_stride=small_s,
                small_first_padding=(small_k - small_s) // 2,
                large_first_kernel_size=large_k, large_first_stride=large_s,
                large_first_padding=(large_k - large_s) // 2)
        except ValueError as error:
            raise KdbenchError(f"deepsleepnet: {n_times} samples at {fs:g} Hz do not fit its CNN "
                               f"({first_line(error)})") from None
        self._taps = Taps({"small1": self.core.cnn1.conv1, "large1": self.core.cnn2.conv1,
                           "small": self.core.cnn1, "large": self.core.cnn2})
        self.head = LinearHead(self.core.len_last_layer, options.embedding_dim, info.num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        with warnings.catch_warnings():
            # torch notes (once per process) that 'same' padding with braindecode's even deep kernels
            # (8 and 6) copies the input: a remark on the library's layer speed the user cannot act on.
            warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)
            feature = self.core(x)                                  # (B, 2 * bilstm_hidden_size)
        taps = self._taps.take()
        stages = (torch.cat((pooled(taps["small1"]), pooled(taps["large1"])), 1),
                  torch.cat((pooled(taps["small"]), pooled(taps["large"])), 1), feature)
        logits, embedding = self.head(feature)
        return ModelOutput(logits, embedding, stages)
