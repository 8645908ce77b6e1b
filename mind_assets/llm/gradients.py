"""Gradient features for G-Vendi: per-sample gradients of a small proxy model's language-model
loss on the completion tokens only, randomly projected to a fixed dimension.

The projection is a Rademacher matrix (entries ±1, scaled by 1/√d) that is never stored: it is
regenerated chunk by chunk from a fixed seed, so the same parameter always meets the same row of
signs, in any run, on any machine. Signs come from random bytes unpacked to bits, which is far
cheaper than drawing integers one by one.

On CPU the full gradient of even a 135M-parameter model is costly to project (135M × 1024 signs
per batch), so the parameters can be restricted to the last k transformer blocks; the benchmark
reports how well that agrees with the full gradient.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from mind_assets.lib.tokenizer import worker_count
from mind_assets.settings import DiversitySettings, MindSettings

log = logging.getLogger(__name__)

_DEFAULTS = DiversitySettings()


@dataclass(frozen=True)
class FeatureConfig:
    """How features are made; the defaults are the settings' (MIND_DIVERSITY__*)."""

    model_path: str
    last_blocks: int | None = _DEFAULTS.last_blocks or None  # None: every parameter (the paper)
    dim: int = _DEFAULTS.dim
    seed: int = MindSettings.model_fields["seed"].default
    max_tokens: int = _DEFAULTS.max_tokens  # prompt + completion, truncated from the prompt's left
    batch_size: int = _DEFAULTS.batch_size  # gradients projected together (signs made once a batch)
    chunk: int = 1 << 16  # parameters per sign block

    def describe(self) -> str:
        scope = "all parameters" if self.last_blocks is None else f"last {self.last_blocks} blocks"
        return (
            f"{self.model_path} ({scope}), Rademacher projection to {self.dim} (seed {self.seed})"
        )


class RademacherProjection:
    """x ↦ x·R/√d for a P×d matrix R of ±1 generated on the fly from `seed`, block by block.

    A chunk's signs are the sign bits of raw 32-bit draws from numpy's PCG64 seeded with
    (seed, chunk index): OR-ing each with the bits of 1.0f gives ±1.0 exactly, with no
    conversion pass. The signs depend on (seed, chunk, dim) only, never on the device.

    A chunk's stream is drawn in slices of `slice_rows` rows that fit in a core's cache, each
    made into signs and multiplied while still there: the same signs as one draw of the whole
    chunk, without three passes over a quarter-gigabyte block in memory. For a few samples
    (a Prismatic round's new items) that is what the projection's time was.
    """

    def __init__(
        self, n_params: int, dim: int, seed: int, chunk: int, slice_rows: int = 256
    ) -> None:
        self.n_params, self.dim, self.seed, self.chunk = n_params, dim, seed, chunk
        self.slice_rows = max(2, slice_rows - slice_rows % 2)  # even: whole 64-bit draws

    def _slices(self, index: int, rows: int) -> Iterator[np.ndarray]:
        """The signs of chunk `index`'s first `rows` rows, `slice_rows` rows at a time."""
        draws = np.random.default_rng([self.seed, index]).bit_generator
        for start in range(0, rows, self.slice_rows):
            count = (min(start + self.slice_rows, rows) - start) * self.dim
            # Every slice but the last holds an even count of words, so consecutive slices
            # continue the chunk's stream exactly where one draw of the chunk would.
            words = draws.random_raw((count + 1) // 2).view(np.uint32)[:count]
            np.bitwise_and(words, np.uint32(0x80000000), out=words)
            np.bitwise_or(words, np.uint32(0x3F800000), out=words)
            yield words.view(np.float32).reshape(-1, self.dim)

    def signs(self, index: int, rows: int) -> np.ndarray:
        """The first `rows` rows of chunk `index` of R."""
        return np.concatenate(list(self._slices(index, rows)))

    def _chunk_product(self, gradients: np.ndarray, index: int) -> np.ndarray:
        """gradients[:, chunk index] · R[chunk index], accumulated slice by slice in order."""
        start = index * self.chunk
        rows = min(start + self.chunk, self.n_params) - start
        out = np.zeros((gradients.shape[0], self.dim), dtype=np.float32)
        for offset, signs in zip(
            range(start, start + rows, self.slice_rows), self._slices(index, rows), strict=True
        ):
            out += gradients[:, offset : offset + len(signs)] @ signs
        return out

    def __call__(self, gradients: np.ndarray) -> np.ndarray:
        if gradients.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} gradient entries, got {gradients.shape[1]}")
        # Chunks are independent streams, drawn on every core (numpy releases the GIL while
        # drawing, masking and multiplying); their products are summed in chunk order, so the
        # result does not depend on how many cores made them.
        # One BLAS thread per chunk thread: BLAS threads of their own would oversubscribe.
        chunks = range(-(-self.n_params // self.chunk))
        with (
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(max_workers=min(len(chunks), worker_count(None)) or 1) as pool,
        ):
            products = pool.map(lambda index: self._chunk_product(gradients, index), chunks)
            out = np.zeros((gradients.shape[0], self.dim), dtype=np.float32)
            for product in products:
                out += product
        return out / np.float32(math.sqrt(self.dim))


@dataclass
class FeatureStats:
    samples: int = 0
    seconds: float = 0.0
    gradient_seconds: float = 0.0
    projection_seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


class GradientFeaturizer:
    """Loads the proxy model once (transformers, float32, CPU or the first GPU)."""

    def __init__(self, config: FeatureConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            config.model_path, dtype=torch.float32
        ).to(self.device)
        self.model.eval()  # no dropout: the gradient is a function of the sample alone
        self.params = self._select_parameters()
        self.n_params = sum(p.numel() for p in self.params)
        self.projection = RademacherProjection(self.n_params, config.dim, config.seed, config.chunk)

    def _select_parameters(self) -> list[Any]:
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.config.last_blocks is None:
            chosen = list(self.model.parameters())
        else:
            layers = _transformer_blocks(self.model)
            if not 1 <= self.config.last_blocks <= len(layers):
                raise ValueError(
                    f"last_blocks must be 1..{len(layers)}, got {self.config.last_blocks}"
                )
            chosen = [p for layer in layers[-self.config.last_blocks :] for p in layer.parameters()]
        for p in chosen:
            p.requires_grad_(True)
        return chosen

    def _gradient(self, prompt: str, completion: str) -> np.ndarray:
        torch = self.torch
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        completion_ids = completion_ids[: self.config.max_tokens - 1] or [
            self.tokenizer.eos_token_id
        ]
        room = self.config.max_tokens - len(completion_ids)
        prompt_ids = prompt_ids[-room:] if room > 0 else []
        ids = torch.tensor([prompt_ids + completion_ids], device=self.device)
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100  # loss on the completion tokens only
        for p in self.params:
            p.grad = None
        loss = self.model(input_ids=ids, labels=labels).loss
        loss.backward()
        flat = torch.cat([p.grad.reshape(-1) for p in self.params])
        return flat.detach().to("cpu", torch.float32).numpy()

    def features(
        self,
        pairs: Sequence[tuple[str, str]],
        progress: Callable[[int, int, float], None] | None = None,
    ) -> tuple[np.ndarray, FeatureStats]:
        """One projected gradient per (prompt, completion), in order."""
        stats = FeatureStats()
        started = time.monotonic()
        out = np.zeros((len(pairs), self.config.dim), dtype=np.float32)
        for start in range(0, len(pairs), self.config.batch_size):
            batch = pairs[start : start + self.config.batch_size]
            t0 = time.monotonic()
            grads = np.stack([self._gradient(p, c) for p, c in batch])
            t1 = time.monotonic()
            out[start : start + len(batch)] = self.projection(grads)
            stats.gradient_seconds += t1 - t0
            stats.projection_seconds += time.monotonic() - t1
            stats.samples += len(batch)
            stats.peak_rss_mb = max(stats.peak_rss_mb, _peak_rss_mb())
            if progress is not None:
                progress(stats.samples, len(pairs), time.monotonic() - started)
        stats.seconds = time.monotonic() - started
        return out, stats


def _transformer_blocks(model: Any) -> list[Any]:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
        node = model
        try:
            for name in path.split("."):
                node = getattr(node, name)
        except AttributeError:
            continue
        return list(node)
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
