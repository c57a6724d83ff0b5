"""The NCL training loss (NCL.md, "Training"): symmetric InfoNCE on Sinkhorn-biased logits.

Per step: gather both modalities across workers (N = W * B); for t2v, run Sinkhorn on
[text queue; batch texts] x batch videos and add its column biases b (one per video) to the batch logits; v2t
likewise with the video queue and one bias per text; loss = 0.5 * (CE_t2v + CE_v2t) with the diagonal as
positives. The logits use the *old* queue; the gathered batch is enqueued afterwards (MoCo order), so every
rank holds the same queue. With n_iters = 0 the biases are zero and this is exactly CLIP's loss.
"""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ncl_ray.ncl.gather import gather_features, world_info
from ncl_ray.ncl.queue import FeatureQueue
from ncl_ray.ncl.sinkhorn import normalization_error, sinkhorn_biases


class NCLLoss(nn.Module):
    """NCL loss owning the text and video query queues (buffers, so checkpoints carry them).

    Args:
        dim: embedding dimension D.
        queue_size: Q, rows per queue; 0 uses only the current global batch as Sinkhorn queries.
        n_iters: Sinkhorn iterations; 0 = plain contrastive loss (no queue logits are computed at all).
        detach_biases: treat biases as constants (our default) or backpropagate through Sinkhorn.
        gather_with_grad: gradients flow to other ranks' slices (exact large-batch equivalence).
        plain_loss_weight: w >= 0 adds w * the plain contrastive (CLIP) loss on the unbiased logits as `plain_loss`
            (0 = NCL alone). It keeps the raw scores comparable across captions (see the v2t collapse, README).
    """

    def __init__(self, dim: int, queue_size: int, n_iters: int, detach_biases: bool = True,
                 gather_with_grad: bool = True, plain_loss_weight: float = 0.0):
        super().__init__()
        self.n_iters = n_iters
        self.plain_loss_weight = plain_loss_weight
        self.detach_biases = detach_biases
        self.gather_with_grad = gather_with_grad
        self.text_queue = FeatureQueue(queue_size, dim)
        self.video_queue = FeatureQueue(queue_size, dim)

    def _sinkhorn_logits(self, queue: FeatureQueue, queries: torch.Tensor, gallery: torch.Tensor,
                         scale: torch.Tensor, local: torch.Tensor, rank: int) -> torch.Tensor:
        """Detached [queue; all queries] x gallery logits (Q+N, N). The local rank's rows are the batch logits
        the loss already computed (`local`, (B, N)); row order does not change Sinkhorn's column biases."""
        B = local.shape[0]
        with torch.no_grad():
            rows = torch.cat([queue.embeddings.to(queries.dtype), queries[: rank * B].detach(),
                              queries[(rank + 1) * B:].detach()], dim=0)  # (Q+N-B, D)
            return torch.cat([scale * rows @ gallery.detach().T, local.detach()], dim=0)  # (Q+N, N)

    def _biases(self, queue: FeatureQueue, queries: torch.Tensor, gallery: torch.Tensor, scale: torch.Tensor,
                local: torch.Tensor, rank: int):
        """Column biases (N,) of Sinkhorn on the queue and gathered queries, and the detached logits."""
        if not self.detach_biases:  # gradients through Sinkhorn: the whole logit matrix is in the graph
            rows = torch.cat([queue.embeddings.to(queries.dtype), queries], dim=0)  # (Q+N, D)
            logits = scale * rows @ gallery.T  # (Q+N, N)
            _, bias = sinkhorn_biases(logits, self.n_iters, with_grad=True)  # (N,)
            return bias, logits.detach()
        logits = self._sinkhorn_logits(queue, queries, gallery, scale, local, rank)  # (Q+N, N)
        _, bias = sinkhorn_biases(logits, self.n_iters)  # (N,)
        return bias, logits

    def forward(self, video_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor, diagnostics: bool = True) -> Dict[str, torch.Tensor]:
        """Args: video_features, text_features (B, D) unit-norm; logit_scale () = 1/tau; diagnostics: also
        return the detached statistics below (they cost as much as the queue logits: the trainer asks for them
        only on the steps it logs).

        Returns a dict: `contrastive_loss` (the term to minimise), `plain_loss` (with plain_loss_weight > 0),
        the two cross-entropies, and with `diagnostics` the normalisation errors and bias/popularity spreads.
        """
        rank, world = world_info()
        v, t = video_features.float(), text_features.float()  # fp32 logits even under autocast
        scale = logit_scale.float()
        B = v.shape[0]
        all_v = gather_features(v, self.gather_with_grad)  # (N, D)
        all_t = gather_features(t, self.gather_with_grad)  # (N, D)

        labels = torch.arange(B, device=v.device) + B * rank  # positives: the diagonal of the global batch
        plain_t2v = scale * t @ all_v.T  # (B, N)
        plain_v2t = plain_t2v.T if world == 1 else scale * v @ all_t.T  # (B, N); one product on one worker
        sk_logits = video_bias = text_bias = None
        if self.n_iters > 0:
            video_bias, sk_logits = self._biases(self.text_queue, all_t, all_v, scale, plain_t2v, rank)  # (N,)
            text_bias, _ = self._biases(self.video_queue, all_v, all_t, scale, plain_v2t, rank)  # (N,) per text
            loss_t2v = F.cross_entropy(plain_t2v + video_bias[None, :], labels)
            loss_v2t = F.cross_entropy(plain_v2t + text_bias[None, :], labels)
        else:  # CLIP's loss, at CLIP's cost
            loss_t2v, loss_v2t = F.cross_entropy(plain_t2v, labels), F.cross_entropy(plain_v2t, labels)

        out = {"contrastive_loss": 0.5 * (loss_t2v + loss_v2t), "t2v_ce": loss_t2v.detach(),
               "v2t_ce": loss_v2t.detach()}
        if self.plain_loss_weight > 0:
            plain = 0.5 * (F.cross_entropy(plain_t2v, labels) + F.cross_entropy(plain_v2t, labels))
            out["plain_loss"] = self.plain_loss_weight * plain
        if diagnostics:
            out.update(self._diagnostics(all_v, all_t, scale, plain_t2v, rank, sk_logits, video_bias, text_bias))
        if self.training:  # after the loss: the current batch never sees itself in the queue
            self.text_queue.enqueue(all_t.detach())
            self.video_queue.enqueue(all_v.detach())
        return out

    @torch.no_grad()
    def _diagnostics(self, all_v, all_t, scale, plain_t2v, rank, sk_logits, video_bias,
                     text_bias) -> Dict[str, torch.Tensor]:
        if sk_logits is None:  # n_iters = 0: the queue logits exist only for these statistics
            sk_logits = self._sinkhorn_logits(self.text_queue, all_t, all_v, scale, plain_t2v, rank)  # (Q+N, N)
            video_bias = text_bias = torch.zeros(all_v.shape[0], device=all_v.device)  # (N,)
        video_bias, text_bias = video_bias.detach(), text_bias.detach()
        return {
            "norm_error_before": torch.tensor(normalization_error(sk_logits, torch.zeros_like(video_bias))),
            "norm_error_after": torch.tensor(normalization_error(sk_logits, video_bias)),
            "queue_filled": self.text_queue.filled.clone().float(),
            # the v2t collapse: spread of the per-text biases, and how unequal the texts' mean similarity
            # to the batch videos is (a text's "popularity" that the biases can absorb)
            "text_bias_std": text_bias.std(),
            "video_bias_std": video_bias.std(),
            "text_popularity_std": (all_t.detach() @ all_v.detach().T).mean(dim=1).std(),
            "text_mean_norm": all_t.detach().mean(dim=0).norm(),
        }
