"""The one place that maps between continuous (normalised) actions, bin indices and token ids.

OpenVLA's scheme: each action dimension, normalised to [-1, 1], is clipped and digitised against
`n_bins` uniformly spaced *edges* over [-1, 1] (np.digitize, so indices fall in [1, n_bins]). Index i
becomes token id `vocab_size - i`, i.e. the last `n_bins` ids of the base (un-padded) vocabulary.
Decoding maps a token back to the centre of bin interval `clip(i - 1, 0, n_bins - 2)`: there are only
`n_bins - 1` intervals between the edges, so 255 distinct centres for 256 bins, and the top index
folds onto the last centre. Token ids above the base vocabulary (padding rows of the embedding)
decode to the lowest centre, exactly as the original `predict_action` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class ActionTokenizer:
    """Discretises normalised actions into the last `n_bins` token ids of a vocabulary.

    `vocab_size` is the base tokenizer's vocabulary (32000 for Llama-2), *not* the padded embedding
    size (32064 in openvla-7b).
    """

    vocab_size: int = 32000
    n_bins: int = 256
    min_action: float = -1.0
    max_action: float = 1.0
    bins: np.ndarray = field(init=False, repr=False, compare=False)
    bin_centers: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.n_bins >= self.vocab_size:
            raise ValueError(f"n_bins ({self.n_bins}) must be smaller than vocab_size ({self.vocab_size})")
        bins = np.linspace(self.min_action, self.max_action, self.n_bins)
        object.__setattr__(self, "bins", bins)
        object.__setattr__(self, "bin_centers", (bins[:-1] + bins[1:]) / 2.0)

    # -- ids ------------------------------------------------------------------------------------
    @property
    def first_token_id(self) -> int:
        """Smallest token id an encoded action can take."""
        return self.vocab_size - self.n_bins

    @property
    def last_token_id(self) -> int:
        return self.vocab_size - 1

    def is_action_token(self, token_ids: torch.Tensor | np.ndarray):
        return (token_ids >= self.first_token_id) & (token_ids <= self.last_token_id)

    # -- encode / decode ------------------------------------------------------------------------
    def bin_indices(self, actions: np.ndarray) -> np.ndarray:
        """Digitise (clipped) actions to bin indices in [1, n_bins]."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), self.min_action, self.max_action)
        return np.digitize(clipped, self.bins)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions (any shape) -> token ids (same shape, int64)."""
        return (self.vocab_size - self.bin_indices(actions)).astype(np.int64)

    def decode(self, token_ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Token ids (any shape) -> normalised actions at bin centres (float64 numpy, or float32 torch)."""
        if isinstance(token_ids, torch.Tensor):
            centers = torch.as_tensor(self.bin_centers, dtype=torch.float32, device=token_ids.device)
            idx = torch.clamp(self.vocab_size - token_ids.long() - 1, 0, len(self.bin_centers) - 1)
            return centers[idx]
        idx = np.clip(self.vocab_size - np.asarray(token_ids, dtype=np.int64) - 1, 0, len(self.bin_centers) - 1)
        return self.bin_centers[idx]
