"""Per-sample loss memory: the loss each training sample got in its last training forward.

Pure tensor logic, no model and no run state (the plugin feeds it). One slot
per training-set index holds the last training-forward loss (float32) and
the step it was computed at (int64, :data:`NEVER` = never trained on). All
operations stay on the memory's device and never synchronise with the host.

Ranking by memory (``scoring: memory``): a never-seen candidate gets the loss
``+inf``, so it ranks above every remembered one. Ties (several never-seen
candidates) are broken by the candidates' positions in the candidate batch,
which are a uniformly random draw of the epoch permutation, so the tie-break
is uniformly random as well.

Freshness (``scoring: mixed``): a remembered loss of step ``s`` is fresh at
step ``t`` when ``t - s <= max_age``; never-seen candidates are stale.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the step recorded for a sample that was never trained on
NEVER = -1


class LossMemory:
    """Last training-forward loss and its step, per training-set index."""

    def __init__(self, size: int, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ValueError(f"a loss memory needs at least one slot, got {size}")
        self.loss = torch.zeros(size, dtype=torch.float32, device=device)
        self.step = torch.full((size,), NEVER, dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def remember(self, indices: Tensor, losses: Tensor, step: int) -> None:
        """Record ``losses`` (per sample, trained at ``step``) for the dataset ``indices`` (unique)."""
        indices = indices.to(self.loss.device, non_blocking=True)
        self.loss[indices] = losses.detach().to(self.loss.device, torch.float32)
        self.step[indices] = step

    def recall(self, indices: Tensor) -> Tensor:
        """The remembered losses of ``indices``; ``+inf`` for samples never trained on."""
        indices = indices.to(self.loss.device, non_blocking=True)
        seen = self.step[indices] != NEVER
        return torch.where(seen, self.loss[indices], torch.full_like(self.loss[indices], float("inf")))

    def ages(self, indices: Tensor, step: int) -> Tensor:
        """Steps since each of ``indices`` was last trained on (int64); -1 for never-seen samples."""
        indices = indices.to(self.step.device, non_blocking=True)
        last = self.step[indices]
        return torch.where(last != NEVER, step - last, torch.full_like(last, -1))

    def fresh(self, indices: Tensor, step: int, max_age: int) -> Tensor:
        """Bool mask: is the memory of each of ``indices`` at most ``max_age`` steps old at ``step``?"""
        age = self.ages(indices, step)
        return (age >= 0) & (age <= max_age)

    def state_dict(self) -> dict[str, Tensor]:
        return {"loss": self.loss, "step": self.step}

    def load_state_dict(self, blob: dict[str, Tensor]) -> None:
        loss, step = blob["loss"], blob["step"]
        if loss.shape != self.loss.shape or step.shape != self.step.shape:
            raise ValueError(
                f"the checkpoint's loss memory has {loss.shape[0]} slots, this training set {len(self)}"
            )
        self.loss.copy_(loss)
        self.step.copy_(step)


def merge_scores(remembered: Tensor, fresh: Tensor, stale_positions: Tensor, scored: Tensor) -> Tensor:
    """Ranking losses of ``mixed`` scoring: the memory where ``fresh``, the new scores elsewhere.

    ``stale_positions`` are the candidate positions that were scored (``(~fresh).nonzero()``) and
    ``scored`` their losses, in the same order.
    """
    merged = torch.where(fresh, remembered, torch.zeros_like(remembered))
    merged[stale_positions] = scored.to(merged.dtype)
    return merged
