"""NCL folded into an inner product, for any inner-product index (faiss, numpy). No Ray.

NCL ranks gallery item j for query i by s_ij / tau + b_j. Appending tau * b_j to each (unit) gallery embedding and
1 to each query gives q_i . g_j + tau * b_j = tau * (s_ij / tau + b_j): the same ranking from a plain inner product.
"""

import numpy as np


def fold_gallery(embeddings, bias, temperature: float) -> np.ndarray:
    """(C, D) gallery embeddings, (C,) NCL biases -> (C, D+1) float32 rows [g_j, tau * b_j]."""
    emb = np.asarray(embeddings, np.float32)  # (C, D)
    return np.concatenate([emb, (np.float32(temperature) * np.asarray(bias, np.float32))[:, None]], axis=1)


def fold_queries(queries) -> np.ndarray:
    """(R, D) query embeddings -> (R, D+1) float32 rows [q_i, 1]."""
    q = np.asarray(queries, np.float32)  # (R, D)
    return np.concatenate([q, np.ones((len(q), 1), np.float32)], axis=1)
