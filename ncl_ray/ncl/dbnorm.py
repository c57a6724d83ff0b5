"""dbnorm: DBNorm (Wang, Jian and Xue, "Balance Act", EMNLP 2023; `yimuwangcs/Better_Cross_Modal_Retrieval`,
`DBNorm/dbnorm.py`). No Ray.

Its rule: a score is the product of two normalised similarities, one over a bank of queries and one over a bank of
gallery items (for text-to-video: training captions and training videos), each computed as QB-Norm's code does:

    static  (`IS`):      exp(beta s_ij) / sum_{b in bank} exp(beta s_bj)            for every query
    dynamic (`qb_norm`): the same for a query whose top-1 item is among the items the bank's rows put in their
                         top k; any other query keeps its plain similarity s_ij

with beta_query over the query bank and beta_gallery over the gallery bank, the two factors multiplied.

Two places where the published function cannot be what the paper means, and what is done here instead:
- it passes the gallery bank's similarities (`train_vis_test_vis`) as the test similarities of both factors, so
  the test queries are never read; here both factors read the test similarities (DBSN's authors' transcription,
  `ppanzx/DBSN`, `Video_Retrieval/dbsn.py`, corrects it the same way);
- `qb_norm` writes its result into its input array, so the second factor would read the first one's output; here
  each factor reads the test similarities as they are.
Its defaults (beta 1/1.99 and 3) were tuned for its own similarity scale; the defaults here are QB-Norm's 20 for
both, and both are settings.

static is a per-item bias: log score = (bq + bg) s_ij - lse_Q(bq s_.j) - lse_G(bg s_.j), on the logit scale
s_ij / tau + b_j with b_j = -(lse_Q + lse_G) / ((bq + bg) tau); its score is the log of the product. dynamic is
returned as the product itself (float64), as the code computes it.
"""

import torch

from ncl_ray.ncl.sims import GalleryBank, Scorer, Sims, column_logsumexp


@torch.no_grad()
def activated(rows: Sims, k: int) -> torch.Tensor:
    """(C,) bool: the items some row of `rows` has in its top k (QB-Norm's activation set)."""
    active = torch.zeros(rows.n_cols, dtype=torch.bool)
    for _, s in rows.blocks():
        active[s.topk(min(k, rows.n_cols), dim=1).indices.reshape(-1)] = True
    return active


def dbnorm_scorer(bank: Sims, gallery_bank: GalleryBank, temperature: float, variant: str = "static",
                  beta_query: float = 20.0, beta_gallery: float = 20.0, k: int = 1) -> Scorer:
    lse_q = column_logsumexp(bank, beta_query)  # (C,) over the query bank
    lse_g = column_logsumexp(gallery_bank.items, beta_gallery)  # (C,) over the gallery bank
    if variant == "static":
        scale = (beta_query + beta_gallery) * temperature
        b = -(lse_q + lse_g) / scale  # (C,) logit scale

        def static(rows: slice, s: torch.Tensor) -> torch.Tensor:
            return scale * (s / temperature + b[None, :])  # log of the two factors' product

        static.fold_bias = b
        return static
    if variant != "dynamic":
        raise ValueError(f"dbnorm: variant {variant!r} is not static or dynamic (eval.dbnorm_variant)")
    gate_q, gate_g = activated(bank, k), activated(gallery_bank.items, k)

    def dynamic(rows: slice, s: torch.Tensor) -> torch.Tensor:
        s = s.double()  # (r, C)
        top = s.argmax(dim=1)  # (r,) each query's top-1 item (ties: the lowest index)
        fq = torch.where(gate_q[top][:, None], torch.exp(beta_query * s - lse_q.double()[None, :]), s)
        fg = torch.where(gate_g[top][:, None], torch.exp(beta_gallery * s - lse_g.double()[None, :]), s)
        return fq * fg

    return dynamic
