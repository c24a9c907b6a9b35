"""mmaction2's recognizers as students: a curated set by name, or any recognizer from an mmengine config file.

Needs the optional extra (``pip install 'kdbench[mmaction]'``: mmaction2 1.1.0, mmcv-lite, mmengine; why those
versions: docs/students.md). Without it the names are still listed, ``kdbench plugins`` says what to install, and
building one is refused in one line. Nothing of mmaction2 is imported until a student is built.

A recognizer is built from its config with no pretrained weights fetched (``backbone.pretrained = None``), its
head resized to the dataset's classes, and initialised as mmaction2 initialises it (``init_weights``). The
student adapts in both directions:
- in: kdbench clips ``(B, C, T, H, W)`` with pixels in [0, 1] (gray repeated to RGB) become what mmaction2's
  data preprocessor would hand the recognizer: pixels on the 0–255 scale, normalised with the config's
  ``data_preprocessor`` mean and std, shaped ``(B, 1 clip, C, T, H, W)`` for a 3-D recognizer or
  ``(B, T segments, C, H, W)`` for a 2-D one (whose segment count is set to the clip's T);
- out: the head's raw logits (one clip, so no averaging over clips), the input of the head's last linear layer as
  the embedding (for a 2-D recognizer averaged over segments, so that the logits stay its linear function), and
  the backbone's four stages, each averaged over time and space (read with forward hooks that live for one call).
A checkpoint (``checkpoint``: an mmaction2 ``.pth``, ``{'meta', 'state_dict'}``) is loaded strictly into the
recognizer, all but the head's last layer, naming the first key that does not match.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError, Unavailable, first_line
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions, path_field

from .video.common import as_rgb

INSTALL = "pip install 'kdbench[mmaction]' (docs/students.md, \"mmaction2\")"
NEEDS = ("mmaction", "mmengine", "mmcv")
#: mmaction2's default normalisation (ImageNet's, on the 0-255 scale), used when a config names none
DEFAULT_MEAN_STD = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


class MMActionOptions(PluginOptions):
    config: str | None = path_field(
        None, what="file", description="an mmengine config file of an mmaction2 recognizer; None = the curated "
                          "model's config shipped inside mmaction2. Enters the run's hash by its file name only: "
                          "give an edited config a new name")
    cfg_options: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the config's keys, as mmengine's --cfg-options (e.g. "
                                          "--set student.cfg_options.model.backbone.depth=101)")
    checkpoint: str | None = path_field(
        None, what="file", description="an mmaction2 checkpoint (.pth) to start from, loaded strictly except the "
                                       "head's last layer; never downloaded")
    normalize: bool = Field(True, description="normalise with the config's data_preprocessor mean/std")


class MMActionStudent(Model):
    """Any mmaction2 recognizer from an mmengine config file (student.config=path/to/config.py)."""

    name = "mmaction"
    Options = MMActionOptions
    #: a curated student's config, relative to mmaction2's shipped configs folder (``mmaction/.mim/configs``)
    shipped: ClassVar[str | None] = None

    def __init__(self, options: MMActionOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        from .video.common import clip_channels

        clip_channels(self.name, info.student_input_shape)
        mm = _import_mmaction(self.name)
        cfg = self._config(mm)
        model_cfg = cfg.get("model")
        if not model_cfg or model_cfg.get("type") not in ("Recognizer3D", "Recognizer2D"):
            kind = model_cfg.get("type") if model_cfg else "no model"
            raise KdbenchError(f"student {self.name!r}: the config {self.config_path!r} describes {kind}, not a video "
                               f"recognizer (Recognizer3D or Recognizer2D)")
        self.is_3d = model_cfg["type"] == "Recognizer3D"
        _prepare_cfg(model_cfg, info.num_classes, frames=info.student_input_shape[1], mm=mm)
        try:
            self.recognizer = mm["MODELS"].build(model_cfg)
            with _quiet(mm):
                self.recognizer.init_weights()
        except Exception as error:   # a config mmaction2 cannot build
            raise KdbenchError(f"student {self.name!r}: mmaction2 cannot build the model of {self.config_path!r}: "
                               f"{type(error).__name__}: {first_line(error)}") from None
        pre = model_cfg.get("data_preprocessor") or {}
        mean, std = pre.get("mean", DEFAULT_MEAN_STD[0]), pre.get("std", DEFAULT_MEAN_STD[1])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.classifier = _last_linear(self.recognizer.cls_head, self.name)
        if options.checkpoint is not None:
            from .video.weights import load_pretrained

            prefix = next(n for n, m in self.recognizer.named_modules() if m is self.classifier) + "."
            load_pretrained(self.recognizer, options.checkpoint, f"student {self.name!r}", classifier=prefix)

    # ------------------------------------------------------------------ config

    def _config(self, mm: dict[str, Any]):
        if self.options.config is not None:
            path = Path(self.options.config).expanduser()
        elif self.shipped is not None:
            path = Path(mm["configs"]) / self.shipped
        else:
            raise KdbenchError(f"student {self.name!r} needs a recognizer's config: --set student.config=path/to/"
                               f"config.py (mmaction2's own are under {mm['configs']}), or a curated name "
                               f"(`kdbench list students`)")
        self.config_path = str(path)
        if not path.is_file():
            raise KdbenchError(f"student {self.name!r}: config file {str(path)!r} does not exist")
        try:
            cfg = mm["Config"].fromfile(str(path))
            if self.options.cfg_options:
                cfg.merge_from_dict(_dotted(self.options.cfg_options))
        except Exception as error:
            raise KdbenchError(f"student {self.name!r}: config file {str(path)!r} does not parse: "
                               f"{type(error).__name__}: {first_line(error)}") from None
        return cfg

    # ------------------------------------------------------------------ forward

    def prepare(self, x: Tensor) -> Tensor:
        """kdbench's (B, C, T, H, W) clip in [0, 1] → the recognizer's input layout, normalised on 0-255."""
        x = as_rgb(self.name, x) * 255.0
        if self.options.normalize:
            x = (x - self.mean) / self.std
        return x.unsqueeze(1) if self.is_3d else x.transpose(1, 2).contiguous()   # (B, 1, C, T, H, W) | (B, T, C, H, W)

    def forward(self, x: Tensor) -> ModelOutput:
        batch = x.shape[0]
        stage_out: dict[int, Any] = {}   # by stage, not by call order (SlowFast runs its two pathways in turn)
        embedding: list[Tensor] = []
        modules, layout = _stage_modules(self.recognizer.backbone)
        handles = [m.register_forward_hook(lambda _m, _a, out, i=i: stage_out.__setitem__(i, out))
                   for i, m in enumerate(modules)]
        handles.append(self.classifier.register_forward_pre_hook(lambda _m, args: embedding.append(args[0])))
        try:
            feats, extra = self.recognizer.extract_feat(self.prepare(x), stage="backbone")
            logits = self.recognizer.cls_head(feats, **extra)
        finally:
            for handle in handles:
                handle.remove()
        stages = _pool_stages([stage_out[i] for i in range(len(modules))], layout, batch)
        return ModelOutput(logits, embedding[0].flatten(1).reshape(batch, -1, embedding[0].shape[-1]).mean(1), stages)


# ---------------------------------------------------------------------- the curated students


def _curated(name: str, title: str, config: str) -> type[MMActionStudent]:
    doc = (f"{title} from mmaction2's shipped config (the mmaction extra).\n\n"
           f"Config: mmaction/.mim/configs/{config}; change it with student.cfg_options.")
    identifier = "MMAction" + "".join(part.title() for part in name.split("-")[1:])   # mmaction-x3d → MMActionX3D
    return type(identifier, (MMActionStudent,), {"name": name, "shipped": config, "__doc__": doc,
                                                 "__module__": __name__})


CURATED = (
    _curated("mmaction-x3d", "X3D-M", "recognition/x3d/x3d_m_16x5x1_facebook-kinetics400-rgb.py"),
    _curated("mmaction-slowfast", "SlowFast-R50 8x8",
             "recognition/slowfast/slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb.py"),
    _curated("mmaction-tsm", "TSM-R50",
             "recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py"),
    _curated("mmaction-tsm-mobilenetv2", "TSM-MobileNetV2",
             "recognition/tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py"),
    _curated("mmaction-i3d", "I3D-R50",
             "recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py"),
    _curated("mmaction-swin", "Video Swin-T",
             "recognition/swin/swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py"),
)


@hookimpl
def register_students(register):
    register(MMActionStudent)
    for cls in CURATED:
        register(cls)
    missing = [name for name in NEEDS if not _installed(name)]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed: {INSTALL}")


# ---------------------------------------------------------------------- helpers


def _installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (``kdbench list`` must stay fast)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # e.g. set to None in sys.modules: deliberately hidden
        return False


def _import_mmaction(student: str) -> dict[str, Any]:
    """mmaction2's model registry (scope set), its Config class and its shipped configs folder; one line if absent."""
    import warnings

    try:
        with warnings.catch_warnings():   # mmcv-lite warns that it lacks mmcv.ops, which no recognizer here uses
            warnings.filterwarnings("ignore", message=".*mmcv-lite.*")
            import mmaction
            import mmaction.models  # noqa: F401  (registers the recognizers)
            from mmaction.registry import MODELS
            from mmengine.config import Config
            from mmengine.logging import MMLogger
            from mmengine.registry import init_default_scope
    except Exception as error:
        raise KdbenchError(f"student {student!r} needs mmaction2, which does not import here "
                           f"({type(error).__name__}: {first_line(error)}): {INSTALL}") from None
    init_default_scope("mmaction")
    return {"MODELS": MODELS, "Config": Config, "MMLogger": MMLogger,
            "configs": str(Path(mmaction.__file__).parent / ".mim" / "configs")}


class _quiet:
    """mmengine's logger at WARNING for a while: ``init_weights`` logs every parameter at INFO."""

    def __init__(self, mm: dict[str, Any]) -> None:
        self.logger = mm["MMLogger"].get_current_instance()

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel("WARNING")

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _dotted(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"backbone": {"depth": 101}}} → {"model.backbone.depth": 101}, as ``Config.merge_from_dict`` takes."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _prepare_cfg(model_cfg, num_classes: int, *, frames: int, mm: dict[str, Any]) -> None:
    """No weights fetched from the network, the dataset's class count, a 2-D recognizer's segments = the clip's T."""
    import inspect

    backbone, head = model_cfg["backbone"], model_cfg["cls_head"]
    backbone["pretrained"] = None
    cls = mm["MODELS"].get(backbone["type"])
    if cls is not None and "pretrained2d" in inspect.signature(cls.__init__).parameters:
        backbone["pretrained2d"] = False   # else init_weights inflates 2-D weights it would have to download
    for part in ("slow_pathway", "fast_pathway"):
        if isinstance(backbone.get(part), dict):
            backbone[part]["pretrained"] = None
    head["num_classes"] = num_classes
    if model_cfg["type"] == "Recognizer2D":
        for part in (backbone, head):
            if "num_segments" in part:
                part["num_segments"] = frames


def _last_linear(head: nn.Module, student: str) -> nn.Module:
    """The head's last layer that maps onto the classes (``fc_cls``; X3D's ``fc2``)."""
    layers = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv3d, nn.Conv2d))]
    if not layers:
        raise KdbenchError(f"student {student!r}: the recognizer's head has no linear layer to read the embedding at")
    return layers[-1]


def _stage_modules(backbone: nn.Module) -> tuple[list[nn.Module], str]:
    """The backbone modules whose outputs make the stages, and how those are laid out; ([], "") when it has none
    known (feature distillers then use the embedding)."""
    if hasattr(backbone, "slow_path") and hasattr(backbone, "fast_path"):      # SlowFast: both pathways, joined
        return ([getattr(backbone.slow_path, f"layer{i}") for i in range(1, 5)] +
                [getattr(backbone.fast_path, f"layer{i}") for i in range(1, 5)]), "two-pathways"
    numbered = []                                                              # ResNet3d, ResNetTSM, X3D, CSN,
    while hasattr(backbone, f"layer{len(numbered) + 1}"):                      # MobileNetV2TSM (7 layers), ...
        numbered.append(getattr(backbone, f"layer{len(numbered) + 1}"))
    if len(numbered) >= 4:
        return numbered, "channels-first"
    layers = getattr(backbone, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) == 4:                 # SwinTransformer3D
        return list(layers), "channels-last"
    return [], ""


def _pool_stages(outputs: list, layout: str, batch: int) -> tuple[Tensor, ...]:
    """Each stage averaged over time and space. Numbered layers: the last one at each spatial resolution, the
    deepest four (a ResNet's layer1-4; MobileNetV2's layer2, 3, 5, 7)."""
    outputs = [t if isinstance(t, Tensor) else t[0] for t in outputs]
    if layout == "channels-first":
        outputs = [t for t, after in zip(outputs, outputs[1:] + [None])
                   if after is None or after.shape[-2:] != t.shape[-2:]][-4:]

    def pool(t: Tensor) -> Tensor:
        if layout == "channels-last":                     # (B, T, H, W, C)
            return t.mean(dim=(1, 2, 3))
        if t.dim() == 5:                                  # (B, C, T, H, W)
            return t.mean(dim=(2, 3, 4))
        per_frame = t.mean(dim=(2, 3))                    # a 2-D recognizer: (B·segments, C, H, W)
        return per_frame.reshape(batch, -1, per_frame.shape[-1]).mean(1)

    pooled = [pool(t) for t in outputs]
    if layout == "two-pathways":
        return tuple(torch.cat([s, f], dim=1) for s, f in zip(pooled[:4], pooled[4:]))
    return tuple(pooled)
