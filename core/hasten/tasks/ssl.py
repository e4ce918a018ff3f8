"""Self-supervised learning: SimSiam, BYOL, SimCLR, MoCo v2+ and DINO (``task.name: ssl``).

Any registered model is the backbone (built with ``num_classes=0``; its
``forward_features`` is the representation). The task adds the method's
projector (and predictor), and for BYOL, MoCo v2+ and DINO a momentum
(teacher) encoder that is *not* trained by the optimizer: it follows the
online weights with tau_t = 1 - (1 - tau_base) (cos(pi t / L) + 1) / 2 after
every optimizer step. Losses are in :mod:`hasten.tasks.ssl_losses`.

Evaluation is an online weighted kNN classifier on frozen, L2-normalised
backbone features (k = 200, weights exp(cos / 0.1), class votes; memory bank
= the train split with its labels, queries = the val split): ``knn/acc1``.

FLOPs: the training FLOPs of a step are both views through backbone +
projector (+ predictor), forward and backward; the momentum encoder's
forwards (two views, no backward) are reported as the overhead
``momentum_encoder``, the kNN feature extraction as ``knn``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import Tensor, nn

from hasten.config import Config
from hasten.data.augment import ViewSpec, augment_batch, eval_batch
from hasten.data.stream import DataInfo, eval_batches
from hasten.errors import UserError
from hasten.models import build_model, model_unchanged
from hasten.registry import REGISTRY, Options
from hasten.state import Batch, State, StepOutput
from hasten.tasks.base import Task, all_reduce_sum
from hasten.tasks.ssl_losses import (
    BYOLLoss,
    DINOLoss,
    Embeddings,
    MoCoLoss,
    NTXentLoss,
    SimSiamLoss,
    cosine_schedule_tau,
)

Method = Literal["simsiam", "byol", "simclr", "mocov2plus", "dino"]

#: ``batch.extras`` key of the extra targets (N, e, D) Hard Augment passes to the loss
EXTRA_TARGETS = "ssl/extra_targets"

#: Published head sizes for a backbone with >= 512 features (ResNet-18/50), and
#: the method's hyper-parameters. SimSiam: Chen & He 2021; BYOL: Grill et al.
#: 2020; SimCLR: Chen et al. 2020 (projection 128; temperature 0.2 as in
#: solo-learn's small-batch recipes, the paper's 0.1 is for batch 4096);
#: MoCo v2+: MoCo v2 (T 0.2, queue 65536) with solo-learn's BN projector,
#: symmetric loss and cosine momentum 0.99 -> 1; DINO: Caron et al. 2021.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "simsiam": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "pred_hidden_dim": 512},
    "byol": {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096, "tau_base": 0.996},
    "simclr": {"proj_hidden_dim": 2048, "proj_output_dim": 128, "temperature": 0.2},
    "mocov2plus": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2, "tau_base": 0.99,
                   "queue_size": 65536},
    "dino": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "out_dim": 65536, "tau_base": 0.996,
             "student_temperature": 0.1, "teacher_temperature": 0.07, "warmup_teacher_temperature": 0.04,
             "teacher_temperature_warmup": 0.3, "center_momentum": 0.9, "head_batchnorm": None},
}
#: head sizes are scaled by num_features / 512 below 512 backbone features, never below these
MIN_HEAD_DIM, MIN_DINO_OUT = 32, 256
_SCALED = ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "out_dim")
_COMMON = {"method", "knn_k", "knn_temperature", "knn_bank_size"}


def _method_branches(schema: dict[str, Any]) -> None:
    """JSON Schema: the keys each method takes (``if`` method ``then`` propertyNames), so an
    editor offers and accepts only the chosen method's options."""
    branches = []
    for method, defaults in METHOD_DEFAULTS.items():
        condition: dict[str, Any] = {"properties": {"method": {"const": method}}}
        if method != "simsiam":  # the default method applies when none is given
            condition["required"] = ["method"]
        branches.append({"if": condition, "then": {"propertyNames": {"enum": sorted(_COMMON | set(defaults))}}})
    schema["allOf"] = branches


class SSLOptions(Options):
    """``task.options`` of ``task.name: ssl``; unset method options take the published defaults."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_method_branches)
    method: Method = Field("simsiam", description="simsiam, byol, simclr, mocov2plus or dino")
    proj_hidden_dim: int | None = Field(None, gt=0, description="projector hidden width")
    proj_output_dim: int | None = Field(None, gt=0, description="projector output (DINO: bottleneck) width")
    pred_hidden_dim: int | None = Field(None, gt=0, description="predictor hidden width (SimSiam, BYOL)")
    temperature: float | None = Field(None, gt=0, description="InfoNCE temperature (SimCLR, MoCo)")
    tau_base: float | None = Field(None, ge=0, le=1, description="momentum at step 0 (BYOL, MoCo, DINO)")
    queue_size: int | None = Field(None, gt=0, description="MoCo queue of negative keys")
    out_dim: int | None = Field(None, gt=0, description="DINO prototypes")
    student_temperature: float | None = Field(None, gt=0, description="DINO")
    teacher_temperature: float | None = Field(None, gt=0, description="DINO, after warm-up")
    warmup_teacher_temperature: float | None = Field(None, gt=0, description="DINO, at step 0")
    teacher_temperature_warmup: float | None = Field(None, ge=0, le=1, description="DINO, fraction of steps")
    center_momentum: float | None = Field(None, ge=0, lt=1, description="DINO centre EMA")
    head_batchnorm: bool | None = Field(
        None, description="DINO's use_bn_in_head; unset: on when the backbone has BatchNorm (CNNs), off for ViTs"
    )
    knn_k: int = Field(200, gt=0, description="kNN neighbours")
    knn_temperature: float = Field(0.1, gt=0, description="kNN vote weight exp(cos / T)")
    knn_bank_size: int | None = Field(None, gt=0, description="cap of the kNN memory bank (first train samples)")

    @model_validator(mode="after")
    def _used_by_method(self) -> SSLOptions:
        # UserError (not ValueError) passes through pydantic unchanged: the message keeps its key path.
        defaults = METHOD_DEFAULTS[self.method]
        for key in sorted(self.model_fields_set - _COMMON):
            if key not in defaults:
                used = ", ".join(sorted(defaults))
                raise UserError(f"task.options.{key}: not used by method {self.method!r}; its options: {used}")
        return self


def resolve_options(options: SSLOptions, num_features: int, has_batchnorm: bool = True) -> dict[str, Any]:
    """The method's settings: user values, else published defaults scaled to the backbone
    (``num_features``; DINO's ``head_batchnorm`` follows ``has_batchnorm``, whether the backbone has BN).

    (A setting the method does not use was refused when the options were validated.)
    """
    defaults = METHOD_DEFAULTS[options.method]
    scale = min(1.0, num_features / 512)
    resolved: dict[str, Any] = {}
    for key, value in defaults.items():
        given = getattr(options, key)
        if given is not None:
            resolved[key] = given
        elif key in _SCALED:
            floor = MIN_DINO_OUT if key == "out_dim" else MIN_HEAD_DIM
            resolved[key] = max(floor, round(value * scale))
        elif key == "head_batchnorm":
            resolved[key] = has_batchnorm
        else:
            resolved[key] = value
    return resolved


# ------------------------------------------------------------------ networks
def _mlp_bn(dims: list[int], *, last_bn: bool = False, hidden_bias: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU blocks, then a last Linear (optionally followed by a non-affine BN, SimSiam)."""
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(d_in, d_out, bias=hidden_bias), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


class NormalizedLinear(nn.Module):
    """DINO's last layer with ``norm_last_layer``: unit-norm weight rows (weight norm with g = 1), no bias."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """3-layer GELU MLP -> bottleneck -> L2-normalise -> weight-normalised prototypes.

    ``batchnorm`` is DINO's ``use_bn_in_head`` (BatchNorm after the hidden
    layers). A CNN needs it at small scale: its pooled features at
    initialisation are nearly the same vector for every image, so the
    centred teacher is uniform and the student collapses to uniform outputs
    within a few dozen steps (docs/ssl.md: kNN 0.21 without, 0.39 with, on
    the fixed-colour procedural data after 150 steps).
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int,
                 batchnorm: bool = False) -> None:
        super().__init__()

        def norm() -> list[nn.Module]:
            return [nn.BatchNorm1d(hidden_dim)] if batchnorm else []

        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), *norm(), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), *norm(), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = NormalizedLinear(bottleneck_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def build_heads(method: str, num_features: int, dims: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(projector, predictor) of ``method``; predictor is Identity where the method has none."""
    hidden, out = dims["proj_hidden_dim"], dims["proj_output_dim"]
    if method == "simsiam":
        projector = _mlp_bn([num_features, hidden, hidden, out], last_bn=True, hidden_bias=False)
        predictor: nn.Module = _mlp_bn([out, dims["pred_hidden_dim"], out], hidden_bias=False)
        return projector, predictor
    if method == "byol":
        return _mlp_bn([num_features, hidden, out]), _mlp_bn([out, dims["pred_hidden_dim"], out])
    if method in ("simclr", "mocov2plus"):
        return _mlp_bn([num_features, hidden, out]), nn.Identity()
    return DINOHead(num_features, hidden, out, dims["out_dim"], dims["head_batchnorm"]), nn.Identity()


class SSLNetwork(nn.Module):
    """The trainable part: backbone, projector, predictor. ``forward(x) -> (z, p)``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.backbone: Any = backbone  # a registry model: has forward_features
        self.projector = projector
        self.predictor = predictor

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.projector(self.backbone.forward_features(x))
        return z, self.predictor(z)


class MomentumEncoder(nn.Module):
    """The momentum (teacher) copy of backbone + projector: ``forward(x) -> z``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone: Any = backbone
        self.projector = projector

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone.forward_features(x))


def weighted_knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Weighted kNN labels of ``query`` (Wu et al. 2018, as in DINO's evaluation).

    ``query`` and ``bank`` are L2-normalised; each of the k most cosine-similar
    bank samples votes for its label with weight exp(sim / temperature); the
    class with the most weight wins.
    """
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, query.shape[0], chunk):  # chunks bound the (chunk, bank) similarity matrix
        similarity = query[start : start + chunk] @ bank.T
        top_similarity, top_index = similarity.topk(k, dim=1)
        weights = (top_similarity / temperature).exp()
        votes = torch.zeros(similarity.shape[0], num_classes, device=query.device, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[top_index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long, device=query.device)


# ---------------------------------------------------------------------- task
class SSLTask(Task):
    """Two SimCLR-augmented views per image, a symmetric SSL loss per image, kNN evaluation."""

    name = "ssl"
    Options = SSLOptions
    num_views = 2
    metrics = ("knn/acc1",)

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__(config, info)
        if info.is_vector:
            raise UserError(
                f"task.name: ssl needs image data; data.dataset {config.data.dataset!r} is vector data"
            )
        backbone = build_model(
            config.model.name, num_classes=0, in_channels=info.channels, options=config.model.options,
            key="model.name",
        )
        self.method: str = self.options.method
        self.num_features = int(backbone.num_features)
        has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
        self.settings = resolve_options(self.options, self.num_features, has_batchnorm)
        projector, predictor = build_heads(self.method, self.num_features, self.settings)
        self.model: Any = SSLNetwork(backbone, projector, predictor)
        # The momentum encoder starts as an exact copy and never enters the optimizer.
        self.momentum_encoder: MomentumEncoder | None = None
        if "tau_base" in self.settings:
            self.momentum_encoder = MomentumEncoder(copy.deepcopy(backbone), copy.deepcopy(projector))
            self.momentum_encoder.requires_grad_(False)
        self.loss = self._build_loss()
        self.policy = self.augment_policy(default="simclr")
        self._total_steps = 1
        self._momentum_pairs: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._last_batch = 0
        self._pending_keys: Tensor | None = None

    def _build_loss(self) -> Any:
        s = self.settings
        if self.method == "simsiam":
            return SimSiamLoss()
        if self.method == "byol":
            return BYOLLoss()
        if self.method == "simclr":
            return NTXentLoss(s["temperature"])
        if self.method == "mocov2plus":
            generator = torch.Generator().manual_seed(self.config.run.seed)
            queue = F.normalize(torch.randn(s["queue_size"], s["proj_output_dim"], generator=generator), dim=1)
            return MoCoLoss(s["temperature"], queue)
        return DINOLoss(s["out_dim"], s["student_temperature"], s["warmup_teacher_temperature"],
                        s["center_momentum"])

    # -- set-up and checkpoints
    def setup(self, state: State) -> None:
        self._total_steps = state.total_steps
        if self.momentum_encoder is not None:
            self.momentum_encoder.to(state.device)
            online = [*self.model.backbone.parameters(), *self.model.projector.parameters()]
            self._momentum_pairs = (list(self.momentum_encoder.parameters()), online)
        if isinstance(self.loss, MoCoLoss):
            self.loss.queue = self.loss.queue.to(state.device)
            self.loss.pointer = self.loss.pointer.to(state.device)
        if isinstance(self.loss, DINOLoss):
            self.loss.center = self.loss.center.to(state.device)

    def state_dict(self) -> dict[str, Any]:
        blob: dict[str, Any] = {}
        if self.momentum_encoder is not None:
            blob["momentum_encoder"] = self.momentum_encoder.state_dict()
        if isinstance(self.loss, MoCoLoss):
            blob["queue"], blob["queue_pointer"] = self.loss.queue, self.loss.pointer
        if isinstance(self.loss, DINOLoss):
            blob["center"] = self.loss.center
        return blob

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        if self.momentum_encoder is not None:
            self.momentum_encoder.load_state_dict(blob["momentum_encoder"])
        if isinstance(self.loss, MoCoLoss):
            self.loss.queue.copy_(blob["queue"])
            self.loss.pointer.copy_(blob["queue_pointer"])
        if isinstance(self.loss, DINOLoss):
            self.loss.center.copy_(blob["center"])

    # -- schedules
    def momentum_tau(self, step: int) -> float:
        return cosine_schedule_tau(step, self._total_steps, self.settings["tau_base"])

    def teacher_temperature(self, step: int) -> float:
        """DINO: linear warm-up from warmup_teacher_temperature to teacher_temperature."""
        s = self.settings
        warmup = s["teacher_temperature_warmup"] * self._total_steps
        if step >= warmup:
            return float(s["teacher_temperature"])
        start, end = s["warmup_teacher_temperature"], s["teacher_temperature"]
        return float(start + (end - start) * step / warmup)

    def _set_step_parameters(self, step: int) -> None:
        if isinstance(self.loss, DINOLoss):
            self.loss.teacher_temperature = self.teacher_temperature(step)

    # -- views and losses
    def augment_views(self, state: State, images: Tensor, count: int) -> Tensor:
        """``count`` independent augmentations of every image: (count, N, C, r, r), one augment call."""
        repeated = images.repeat(count, *([1] * (images.dim() - 1)))
        views = augment_batch(
            repeated, state.resolution, state.aug_magnitude, self.policy, state.generator,
            self.info.mean, self.info.std,
        )
        return views.view(count, images.shape[0], *views.shape[1:])

    def views(self, state: State, batch: Batch) -> list[Tensor]:
        return list(self.augment_views(state, batch.images, 2).unbind(0))

    def loader_views(self) -> ViewSpec | None:
        return ViewSpec(self.policy, self.num_views, tuple(self.info.mean), tuple(self.info.std))

    def embed(self, model: nn.Module, inputs: Tensor) -> Embeddings:
        """Online and target outputs of a batch of views (B, C, r, r) -> (B, D) each."""
        z, p = model(inputs)
        if self.momentum_encoder is None:
            return Embeddings(p, z)
        with torch.no_grad():
            target = self.momentum_encoder(inputs)
        return Embeddings(p, target)

    @torch.no_grad()
    def score_pairs(self, state: State, views: Tensor) -> tuple[Tensor, Tensor]:
        """Hard Augment's mining pass: losses (N, C(m,2)) of all pairs of ``views`` (m, N, C, r, r).

        No gradient, eval mode (BatchNorm uses its running statistics), and
        no update of the queue or the centre: the model's state is unchanged.
        Also returns the target embeddings (m, N, D) (extra targets).
        """
        self._set_step_parameters(state.step)
        m, n = views.shape[:2]
        with model_unchanged(self.model), (
            model_unchanged(self.momentum_encoder) if self.momentum_encoder is not None else nullcontext()
        ):
            emb = self.embed(self.model, views.flatten(0, 1))
        emb = Embeddings(emb.online.view(m, n, -1), emb.target.view(m, n, -1))
        return self.loss.all_pair_losses(emb), emb.target

    def scoring_flops_per_view(self, accountant: Any, resolution: int) -> float:
        """Forward FLOPs of one view in :meth:`score_pairs` (online network + momentum encoder)."""
        shape = self.input_shape(resolution)
        flops = accountant.forward_per_sample(self.model, shape)
        if self.momentum_encoder is not None:
            flops += accountant.forward_per_sample(self.momentum_encoder, shape)
        return float(flops)

    def forward(self, state: State, batch: Batch, model: nn.Module) -> StepOutput:
        self._set_step_parameters(state.step)
        first, second = batch.views[0], batch.views[1]
        n = first.shape[0]
        # Both views in one forward: one kernel launch per layer; BatchNorm sees both views (as SimCLR's code).
        emb = self.embed(model, torch.cat([first, second]))
        extra = batch.extras.get(EXTRA_TARGETS)
        if extra is not None:
            selected = Embeddings(emb.online.view(2, n, -1), emb.target.view(2, n, -1))
            losses = self.loss.extra_target_losses(selected, extra.transpose(0, 1))
        else:
            losses = self.loss.pair_losses(
                Embeddings(emb.online[:n], emb.target[:n]), Embeddings(emb.online[n:], emb.target[n:])
            )
        if isinstance(self.loss, MoCoLoss):
            # Enqueued after the optimizer step: backward still needs the queue this loss read.
            self._pending_keys = emb.target.detach()
        elif isinstance(self.loss, DINOLoss):
            self.loss.update_center(emb.target)
        self._last_batch = n
        with torch.no_grad():  # collapse indicator: per-dimension std of normalised outputs (1/sqrt(D) healthy)
            spread = F.normalize(emb.online.detach().float(), dim=1).std(dim=0).mean()
        return StepOutput(loss=losses.mean(), sample_losses=losses.detach(), num_samples=n,
                          metrics={"output_std": spread})

    def sample_losses(self, model: nn.Module, inputs: Tensor, batch: Batch) -> Tensor:
        raise UserError("task.name: ssl has no single-view per-sample loss; selection needs classification "
                        "(SSL hard-example mining is plugins.hardaug)")

    def after_optimizer_step(self, state: State) -> None:
        if self._pending_keys is not None and isinstance(self.loss, MoCoLoss):
            self.loss.enqueue(self._pending_keys)
            self._pending_keys = None
        if self.momentum_encoder is None:
            return
        tau = self.momentum_tau(state.step)
        target, online = self._momentum_pairs
        with torch.no_grad():
            torch._foreach_mul_(target, tau)
            torch._foreach_add_(target, online, alpha=1.0 - tau)
        flops = self._last_batch * self.num_views * state.flops.forward_per_sample(
            self.momentum_encoder, self.input_shape(state.resolution)
        )
        state.flops.add_overhead("momentum_encoder", flops)

    def forward_flops_per_sample(self, accountant: Any, resolution: int) -> float:
        """Both views through backbone + projector (+ predictor); the momentum encoder is an overhead."""
        return self.num_views * accountant.forward_per_sample(self.model, self.input_shape(resolution))

    # -- evaluation
    @torch.no_grad()
    def _features(self, state: State, batches: Iterator[Batch], limit: int | None) -> tuple[Tensor, Tensor]:
        backbone = self.model.backbone
        features, labels, count = [], [], 0
        for batch in batches:
            if limit is not None and count >= limit:
                break
            images = batch.images.to(state.device)
            inputs = eval_batch(images, state.max_resolution, self.info.mean, self.info.std)
            features.append(F.normalize(backbone.forward_features(inputs).float(), dim=1))
            labels.append(batch.labels.to(state.device))
            count += len(batch)
        if not features:
            return torch.zeros(0, self.num_features, device=state.device), torch.zeros(0, dtype=torch.long)
        out_f, out_l = torch.cat(features), torch.cat(labels)
        return (out_f[:limit], out_l[:limit]) if limit is not None else (out_f, out_l)

    def evaluate(self, state: State) -> dict[str, float]:
        """Weighted kNN top-1 of the val split against the train split's features: ``knn/acc1``."""
        if self.info.num_classes < 2:
            return {}  # no labels: nothing to vote with
        opts, eval_cfg = self.options, self.config.eval
        with model_unchanged(self.model):
            # Every rank builds the whole bank (simple and exact); queries are sharded and reduced.
            bank, bank_labels = self._features(
                state, eval_batches(state.data.train, eval_cfg.batch_size), opts.knn_bank_size
            )
            val_limit = None if eval_cfg.max_batches is None else eval_cfg.max_batches * eval_cfg.batch_size
            query, query_labels = self._features(state, state.data.val_batches(eval_cfg.batch_size), val_limit)
        predicted = weighted_knn_predict(
            query, bank, bank_labels, self.info.num_classes, opts.knn_k, opts.knn_temperature
        )
        per_image = state.flops.forward_per_sample(self.model.backbone, self.input_shape(state.max_resolution))
        state.flops.add_overhead("knn", per_image * (bank.shape[0] + query.shape[0]))
        totals = torch.stack([
            torch.tensor(float(query.shape[0]), device=state.device, dtype=torch.float64),
            predicted.eq(query_labels).sum().double(),
        ])
        n, hits = all_reduce_sum(totals).tolist()
        return {"knn/acc1": hits / max(n, 1.0)}


REGISTRY.tasks.add("ssl", SSLTask)
