"""Self-supervised losses as pure functions of view embeddings (docs/methods.md section 4).

Every method scores a *pair* of views of the same image with a per-sample
loss, and can score *all* C(m, 2) pairs of m views at once (Hard Augment
ranks them). A view's embeddings are an :class:`Embeddings` pair:

    online  the branch that receives gradients (SimSiam/BYOL: predictor output p;
            SimCLR/MoCo: projection z, q; DINO: student logits s)
    target  the branch the online output is compared with (SimSiam: the
            projection z, stop-gradient; BYOL/MoCo: the momentum encoder's
            projection; DINO: the teacher's logits; SimCLR: z itself)

For SimSiam, BYOL, MoCo v2+ and DINO the pair loss is symmetric in two
one-directional terms ``term(online, target)``:

    L(a, b) = s * (term(o_a, t_b) + term(o_b, t_a))

    SimSiam  term = -cos(p, sg(z))                                s = 1/2
    BYOL     term = 2 - 2 cos(p, sg(z'))                         s = 1 (the paper sums)
    MoCo v2+ term = -log exp(q.k/T) / (exp(q.k/T) + sum_Q exp(q.n/T)),
             q, k, n L2-normalised, Q the queue of negatives        s = 1/2
    DINO     term = -sum_k softmax((t - c)/T_t)_k log softmax(s/T_s)_k,
             c the centre                                           s = 1/2

For SimCLR the per-sample loss is its InfoNCE (NT-Xent) term: with the 2N
L2-normalised projections of a pair of views of N images and S = Z Z^T / T,

    l_k = -S[k, pos(k)] + log sum_{j != k} exp(S[k, j])
    L(a, b)_n = (l_n + l_{N+n}) / 2          (its mean over n is NT-Xent)

so the negatives of a pair are the other images' views *of that pair*.
``all_pair_losses`` gives, for every pair (i, j), the loss that pair would
have had were it the trained pair, without a Python loop over images or
pairs: pair indices come from ``torch.combinations``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Embeddings(NamedTuple):
    """One view's (or m views') online and target outputs: (N, D) or (m, N, D)."""

    online: Tensor
    target: Tensor


def pair_index(m: int, device: torch.device | str | None = None) -> Tensor:
    """The C(m, 2) pairs (i < j) of m views as a (P, 2) long tensor, in ``torch.combinations`` order."""
    return torch.combinations(torch.arange(m, device=device), r=2)


def cosine_schedule_tau(step: int, total_steps: int, tau_base: float) -> float:
    """BYOL's momentum schedule tau_t = 1 - (1 - tau_base) (cos(pi t / L) + 1) / 2 (tau_base at 0, 1 at L)."""
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * step / max(1, total_steps)) + 1.0) / 2.0


class SymmetricLoss:
    """A loss made of a one-directional ``term``; subclasses define ``cross_terms``."""

    #: s in L(a, b) = s * (term(o_a, t_b) + term(o_b, t_a))
    scale: float = 0.5

    def cross_terms(self, online: Tensor, target: Tensor) -> Tensor:
        """term(online[i], target[j]) for all i, j: (m, D...) x (m', D...) -> (m, m', N)."""
        raise NotImplementedError

    def term(self, online: Tensor, target: Tensor) -> Tensor:
        """One-directional per-sample loss of (N, D) online vs (N, D) target."""
        return self.cross_terms(online[None], target[None])[0, 0]

    def pair_losses(self, a: Embeddings, b: Embeddings) -> Tensor:
        """Per-sample loss (N,) of the pair of views (a, b)."""
        return self.scale * (self.term(a.online, b.target) + self.term(b.online, a.target))

    def all_pair_losses(self, views: Embeddings) -> Tensor:
        """Per-sample losses (N, C(m, 2)) of every pair of m views ((m, N, D) embeddings)."""
        pairs = pair_index(views.online.shape[0], views.online.device)
        terms = self.cross_terms(views.online, views.target)  # (m, m, N)
        i, j = pairs[:, 0], pairs[:, 1]
        return (self.scale * (terms[i, j] + terms[j, i])).transpose(0, 1)

    def extra_target_losses(self, selected: Embeddings, extra_targets: Tensor) -> Tensor:
        """Multi-crop style loss of the selected pair (2, N, D) with extra targets (e, N, D): (N,).

        The mean of the 2 pair terms and the 2e terms online-vs-extra-target,
        times 2s, so that with e = 0 it equals :meth:`pair_losses`.
        """
        pair = self.cross_terms(selected.online, selected.target)  # (2, 2, N)
        extra = self.cross_terms(selected.online, extra_targets)  # (2, e, N)
        total = pair[0, 1] + pair[1, 0] + extra.sum(dim=(0, 1))
        count = 2 + 2 * extra_targets.shape[0]
        return 2 * self.scale * total / count


def _full_precision(x: Tensor) -> Tensor:
    """bf16/fp16 (autocast) outputs to float32 for softmax-type losses; float64 stays."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _cosine_matrix(online: Tensor, target: Tensor) -> Tensor:
    """cos(online[i, n], target[j, n]) for all i, j: (m, N, D) x (m', N, D) -> (m, m', N)."""
    return torch.einsum("ind,jnd->ijn", F.normalize(online, dim=-1), F.normalize(target, dim=-1))


class SimSiamLoss(SymmetricLoss):
    """SimSiam: L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D(p, z) = -cos(p, z)."""

    scale = 0.5

    def cross_terms(self, online: Tensor, target: Tensor) -> Tensor:
        return -_cosine_matrix(online, target.detach())


class BYOLLoss(SymmetricLoss):
    """BYOL: L = l(p1, sg(z'2)) + l(p2, sg(z'1)) with l = ||p/|p| - z'/|z'|||^2 = 2 - 2 cos."""

    scale = 1.0

    def cross_terms(self, online: Tensor, target: Tensor) -> Tensor:
        return 2.0 - 2.0 * _cosine_matrix(online, target.detach())


class MoCoLoss(SymmetricLoss):
    """MoCo v2+ (symmetric InfoNCE with a queue of negative keys).

    ``queue`` is (K, D), rows L2-normalised; the task enqueues the keys of
    every trained view after each forward (:meth:`enqueue`).
    """

    scale = 0.5

    def __init__(self, temperature: float, queue: Tensor) -> None:
        self.temperature = temperature
        self.queue = queue
        self.pointer = torch.zeros((), dtype=torch.long, device=queue.device)

    def cross_terms(self, online: Tensor, target: Tensor) -> Tensor:
        q = F.normalize(online, dim=-1)
        k = F.normalize(target.detach(), dim=-1)
        positive = torch.einsum("ind,jnd->ijn", q, k) / self.temperature  # (m, m', N)
        # The queue part of the denominator depends on the query only: once per view.
        negatives = torch.logsumexp(q @ self.queue.T.to(q.dtype) / self.temperature, dim=-1)  # (m, N)
        return torch.logaddexp(positive, negatives[:, None, :]) - positive

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (B, D) over the oldest queue entries (a ring buffer; no host sync)."""
        size = self.queue.shape[0]
        keys = F.normalize(keys.detach().float(), dim=-1)[-size:]
        slots = (self.pointer + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.pointer.copy_((self.pointer + keys.shape[0]) % size)


class DINOLoss(SymmetricLoss):
    """DINO: cross-entropy between the centred, sharpened teacher and the student.

    ``center`` is (1, K); the task updates it with :meth:`update_center` from
    the teacher outputs of the trained views; ``teacher_temperature`` follows
    the warm-up schedule (set by the task each step).
    """

    scale = 0.5

    def __init__(self, out_dim: int, student_temperature: float, teacher_temperature: float,
                 center_momentum: float, device: torch.device | str | None = None) -> None:
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        self.center = torch.zeros(1, out_dim, device=device)

    def teacher_probabilities(self, teacher_logits: Tensor) -> Tensor:
        logits = _full_precision(teacher_logits.detach())
        return F.softmax((logits - self.center.to(logits.dtype)) / self.teacher_temperature, dim=-1)

    def cross_terms(self, online: Tensor, target: Tensor) -> Tensor:
        log_student = F.log_softmax(_full_precision(online) / self.student_temperature, dim=-1)  # (m, N, K)
        teacher = self.teacher_probabilities(target)  # (m', N, K)
        return -torch.einsum("jnk,ink->ijn", teacher, log_student)

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """c <- mu c + (1 - mu) mean of the teacher logits over the batch (all views)."""
        logits = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
        batch_center = logits.to(self.center.dtype).mean(0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class NTXentLoss:
    """SimCLR's NT-Xent with per-sample InfoNCE terms (see the module docstring)."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def pair_losses(self, a: Embeddings, b: Embeddings) -> Tensor:
        n = a.online.shape[0]
        z = F.normalize(torch.cat([a.online, b.online]), dim=-1)
        similarity = z @ z.T / self.temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        similarity = similarity.masked_fill(self_mask, float("-inf"))
        index = torch.arange(2 * n, device=z.device)
        positive = similarity[index, (index + n) % (2 * n)]
        per_anchor = torch.logsumexp(similarity, dim=1) - positive
        return 0.5 * (per_anchor[:n] + per_anchor[n:])

    def all_pair_losses(self, views: Embeddings) -> Tensor:
        """(N, C(m, 2)): pair (i, j)'s NT-Xent terms with the views i and j of all images as the batch.

        One (m, m, N, N) similarity tensor; the denominator of anchor (i, n)
        in pair (i, j) is the log-sum of its blocks (i, i) without itself and
        (i, j): logaddexp of two block log-sum-exps.
        """
        m, n = views.online.shape[:2]
        z = F.normalize(views.online, dim=-1)
        similarity = torch.einsum("ind,jkd->ijnk", z, z) / self.temperature  # (m, m, N, N)
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        same_view = torch.eye(m, dtype=torch.bool, device=z.device)
        similarity = similarity.masked_fill(same_view[:, :, None, None] & eye, float("-inf"))
        block_lse = torch.logsumexp(similarity, dim=-1)  # (m, m, N)
        positive = torch.diagonal(similarity, dim1=-2, dim2=-1)  # (m, m, N): view i of n vs view j of n
        pairs = pair_index(m, z.device)
        i, j = pairs[:, 0], pairs[:, 1]
        anchor_i = torch.logaddexp(block_lse[i, i], block_lse[i, j]) - positive[i, j]
        anchor_j = torch.logaddexp(block_lse[j, j], block_lse[j, i]) - positive[j, i]
        return (0.5 * (anchor_i + anchor_j)).transpose(0, 1)
