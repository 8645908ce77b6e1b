"""The Vendi score in its dual form: G-Vendi (Prismatic Synthesis) is this score over
L2-normalised gradient features.

With rows x_i of unit norm, the similarity matrix XXᵀ/N (N×N) and the covariance XᵀX/N (d×d) share
their non-zero eigenvalues, which sum to 1; the score is exp(Shannon entropy of those
eigenvalues). Computing it on the d×d side costs O(N·d² + d³) whatever N is, which is why features
are projected to d = 1024 first.
"""

from __future__ import annotations

import numpy as np


def vendi_score(features: np.ndarray) -> float:
    """exp(H(eig(XᵀX/N))) of the row-normalised features; 1 for identical rows, N for
    orthogonal ones. Rows of zeros are ignored (they carry no direction)."""
    from scipy.linalg import eigvalsh

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-d array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    x = x[norms > 0] / norms[norms > 0, None]
    n = x.shape[0]
    if n == 0:
        return 0.0
    # The smaller of the two Gram forms gives the same non-zero spectrum.
    gram = (x.T @ x) / n if x.shape[1] <= n else (x @ x.T) / n
    eigenvalues = eigvalsh(gram)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    eigenvalues = eigenvalues / eigenvalues.sum()
    entropy = -float(np.sum(eigenvalues * np.log(eigenvalues)))
    return float(np.exp(entropy))
