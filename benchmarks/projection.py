"""The Rademacher projection of gradient features: the platform's projection against the first
one (each chunk's signs drawn whole on one thread, then masked and multiplied in memory), side
by side in one process, on gradients the size of SmolLM2-135M's last block.

The sizes are what the platform projects: a Prismatic round's few new items (3 samples) and a
full batch of G-Vendi features (64). Both projections use the same signs; their outputs agree
to float rounding (the table reports by how much).

Writes the section between the projection markers of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import RESULTS, replace_section  # noqa: E402
from mind_assets.llm.gradients import FeatureConfig, RademacherProjection  # noqa: E402
from mind_assets.llm.hardware import detect_host  # noqa: E402

LAST_BLOCK_PARAMS = 3_540_096  # SmolLM2-135M's last transformer block


def whole_chunk_projection(gradients: np.ndarray, dim: int, seed: int, chunk: int) -> np.ndarray:
    """The baseline: every chunk's signs drawn in one piece, as the projection first did."""
    n_params = gradients.shape[1]
    out = np.zeros((gradients.shape[0], dim), dtype=np.float32)
    for index, start in enumerate(range(0, n_params, chunk)):
        stop = min(start + chunk, n_params)
        count = (stop - start) * dim
        raw = np.random.default_rng([seed, index]).bit_generator.random_raw((count + 1) // 2)
        words = raw.view(np.uint32)[:count]
        np.bitwise_and(words, np.uint32(0x80000000), out=words)
        np.bitwise_or(words, np.uint32(0x3F800000), out=words)
        out += gradients[:, start:stop] @ words.view(np.float32).reshape(stop - start, dim)
    return out / np.float32(math.sqrt(dim))


def timed(fn) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def compare(samples: int, runs: int) -> dict:
    config = FeatureConfig(model_path="-")
    gradients = np.random.default_rng(0).normal(size=(samples, LAST_BLOCK_PARAMS))
    gradients = gradients.astype(np.float32)
    ours = RademacherProjection(LAST_BLOCK_PARAMS, config.dim, config.seed, config.chunk)
    baseline_s, ours_s = [], []
    for _ in range(runs):  # alternated, so drift in the machine touches both alike
        seconds, expected = timed(
            lambda: whole_chunk_projection(gradients, config.dim, config.seed, config.chunk)
        )
        baseline_s.append(seconds)
        seconds, projected = timed(lambda: ours(gradients))
        ours_s.append(seconds)
    scale = float(np.abs(expected).max())
    return {
        "samples": samples,
        "baseline_s": statistics.median(baseline_s),
        "ours_s": statistics.median(ours_s),
        "max_abs_diff": float(np.abs(projected - expected).max()) / scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = [compare(n, args.runs) for n in (3, 64)]
    lines = [
        "<!-- projection:start -->",
        "## Gradient projection (`benchmarks/projection.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d} on **{detect_host().describe()}**. Gradients of "
        f"{LAST_BLOCK_PARAMS:,} parameters (SmolLM2-135M's last block, the CPU default) "
        "projected to 1024 dimensions; both sides in one process, alternated, median of "
        f"{args.runs} runs each. Baseline: each chunk's signs drawn whole (256 MB), masked and "
        "multiplied in memory, drawn on one thread, as the projection first did. Ours: the "
        "same signs drawn in cache-sized slices, chunks on every core.",
        "",
        "| samples | baseline s | ours s | baseline / ours | max difference (relative) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['samples']} | {r['baseline_s']:.2f} | {r['ours_s']:.2f} | "
            f"**{r['baseline_s'] / r['ours_s']:.2f}x** | {r['max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "- A Prismatic round computes features for its few new items, so the fixed cost of the "
        "projection was most of a round's feature time on CPU; 64 samples is a full batch.",
        "- The signs are the same (a test holds them equal to one draw of each chunk); the sums "
        "run in another order, hence differences at float rounding.",
        "<!-- projection:end -->",
    ]
    replace_section(RESULTS, "projection", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
