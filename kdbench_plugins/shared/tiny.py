"""The common body of the two small default networks of the ``synthetic`` dataset (``tiny-eeg``, ``tiny-3dcnn``).

They are deliberately tiny (tens of thousands of weights) so that a whole distillation run fits in
well under a minute on a laptop CPU, yet each has three stages so feature-based distillers have
something to align. The student's embedding is narrower than the teacher's on purpose: methods that
match features must learn a projection rather than rely on equal widths.
"""

from __future__ import annotations

from pydantic import BaseModel
from torch import Tensor, nn

from kdbench.contracts import Model, ModelOutput


def block(conv: nn.Module, norm: nn.Module, pool: nn.Module | None = None) -> nn.Sequential:
    return nn.Sequential(conv, norm, nn.ReLU(inplace=True), *([pool] if pool is not None else []))


class ThreeStageNet(Model):
    """Shared tail: run the blocks, pool each to (B, C_k), project the last one to the embedding."""

    def build_head(self, blocks: list[nn.Module], last: int, options: BaseModel, num_classes: int) -> None:
        self.blocks = nn.ModuleList(blocks)
        self.project = nn.Sequential(nn.Linear(last, options.embedding_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(options.dropout)
        self.classifier = nn.Linear(options.embedding_dim, num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        stages = []
        for block in self.blocks:
            x = block(x)
            stages.append(x.flatten(2).mean(-1))          # global average over time (and space)
        embedding = self.project(stages[-1])
        return ModelOutput(self.classifier(self.dropout(embedding)), embedding, tuple(stages))
