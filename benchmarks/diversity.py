"""Gradient features for G-Vendi: throughput and peak memory on this machine, and how much a
parameter subset (the last k blocks, our CPU default) agrees with the full gradient.

Throughput runs each configuration in its own process so its peak memory is its own.
Agreement is measured on raw (unprojected) gradients, whose cosine Gram matrix is exact and
cheap even for all 135M parameters: Spearman correlation between the pairwise similarities of
a subset and of the full gradient, and G-Vendi (the dual form) of each.

Writes the section between the diversity markers of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402


def texts(n: int) -> list[str]:
    with NAPKIN.open() as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]


def model_path() -> str:
    from mind_assets.llm.embedded_model import prepare_embedded_model
    from mind_assets.settings import get_settings

    return str(prepare_embedded_model(get_settings().models_dir))


def throughput(last_blocks: int, n: int, batch: int, max_tokens: int) -> dict:
    from mind_assets.llm.gradients import FeatureConfig, GradientFeaturizer

    config = FeatureConfig(
        model_path(), last_blocks=last_blocks or None, batch_size=batch, max_tokens=max_tokens
    )
    featurizer = GradientFeaturizer(config)
    _, stats = featurizer.features([("", t) for t in texts(n)])
    return {
        "last_blocks": last_blocks,
        "params": featurizer.n_params,
        "samples": stats.samples,
        "samples_per_s": round(stats.samples_per_s, 2),
        "gradient_s": round(stats.gradient_seconds, 1),
        "projection_s": round(stats.projection_seconds, 1),
        "peak_rss_mb": round(stats.peak_rss_mb),
    }


def raw_gradients(n: int, max_tokens: int) -> dict[str, np.ndarray]:
    """Raw gradients for all parameters, sliced per subset afterwards (float16 to fit)."""
    from mind_assets.llm.gradients import FeatureConfig, GradientFeaturizer

    featurizer = GradientFeaturizer(
        FeatureConfig(model_path(), last_blocks=None, max_tokens=max_tokens)
    )
    from mind_assets.llm.gradients import _transformer_blocks

    layers = _transformer_blocks(featurizer.model)
    ids = {id(p) for p in featurizer.params}
    offsets, start = {}, 0
    for p in featurizer.params:
        offsets[id(p)] = (start, start + p.numel())
        start += p.numel()
    subsets = {}
    for k in (1, 2, 4):
        block_params = [p for layer in layers[-k:] for p in layer.parameters() if id(p) in ids]
        subsets[f"last {k}"] = np.concatenate([np.arange(*offsets[id(p)]) for p in block_params])
    grads = np.stack([_half(featurizer._gradient("", t)) for t in texts(n)])
    out = {"all": grads}
    for name, index in subsets.items():
        out[name] = grads[:, index]
    return out


def _half(gradient: np.ndarray) -> np.ndarray:
    """float16 after scaling the largest entry to 1e4 (cosines ignore scale; this keeps the
    small entries out of float16's underflow)."""
    return (gradient * (1e4 / max(float(np.abs(gradient).max()), 1e-30))).astype(np.float16)


def cosine_gram(x: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """Cosine similarities of the rows, accumulated over column blocks (float16 in, float64
    sums), so 24 x 135M gradients never need a float32 copy in memory."""
    gram = np.zeros((len(x), len(x)), dtype=np.float64)
    for start in range(0, x.shape[1], chunk):
        block = x[:, start : start + chunk].astype(np.float32)
        gram += block @ block.T
    norms = np.sqrt(np.diag(gram))
    return gram / np.outer(norms, norms)


def vendi_from_gram(gram: np.ndarray) -> float:
    eig = np.linalg.eigvalsh(gram / len(gram))
    eig = eig[eig > 1e-12]
    eig /= eig.sum()
    return float(np.exp(-(eig * np.log(eig)).sum()))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def agreement(n: int, max_tokens: int) -> list[dict]:
    from mind_assets.llm.gradients import RademacherProjection

    grads = raw_gradients(n, max_tokens)
    upper = np.triu_indices(n, 1)
    full = cosine_gram(grads["all"])
    rows = []
    for name in ("last 1", "last 2", "last 4", "all"):
        gram = cosine_gram(grads[name])
        rows.append(
            {
                "subset": name,
                "params": grads[name].shape[1],
                "spearman_vs_full": round(spearman(gram[upper], full[upper]), 3),
                "g_vendi_raw": round(vendi_from_gram(gram), 3),
            }
        )
    # The projection itself: last 1 block, raw vs projected to 1024.
    last1 = grads["last 1"].astype(np.float32)
    projected = RademacherProjection(last1.shape[1], 1024, 0, 1 << 16)(last1)
    gram = cosine_gram(projected)
    rows.append(
        {
            "subset": "last 1, projected to 1024",
            "params": last1.shape[1],
            "spearman_vs_full": round(spearman(gram[upper], full[upper]), 3),
            "g_vendi_raw": round(vendi_from_gram(gram), 3),
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--agreement-samples", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    if args.child:
        last_blocks, batch = (int(v) for v in args.child.split(","))
        print(json.dumps(throughput(last_blocks, args.samples, batch, args.max_tokens)))
        return

    runs = []
    for last_blocks, batch in ((1, 64), (2, 64), (1, 16)):
        started = time.monotonic()
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                f"{last_blocks},{batch}",
                "--samples",
                str(args.samples),
                "--max-tokens",
                str(args.max_tokens),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["batch"] = batch
        result["wall_s"] = round(time.monotonic() - started, 1)
        print(result, flush=True)
        runs.append(result)
    agree = agreement(args.agreement_samples, args.max_tokens)
    for row in agree:
        print(row, flush=True)

    lines = [
        "<!-- diversity:start -->",
        "## Gradient features for G-Vendi (`benchmarks/diversity.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, CPU "
        f"only; proxy SmolLM2-135M-Instruct (float32, transformers); {args.samples} napkin "
        f"sections, {args.max_tokens} tokens each; projection to 1024. Each configuration ran "
        "in its own process (peak RSS is that process's).",
        "",
        "| parameters | count | batch | samples/s | gradient s | projection s | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| last {r['last_blocks']} block(s) | {r['params']:,} | {r['batch']} | "
            f"{r['samples_per_s']} | {r['gradient_s']} | {r['projection_s']} | "
            f"{r['peak_rss_mb']:,} |"
        )
    lines += [
        "",
        f"Agreement with the full gradient (all parameters) on {args.agreement_samples} "
        "sections: Spearman correlation of the pairwise cosine similarities, and the Vendi "
        "score of each (dual form on the exact Gram matrix).",
        "",
        "| features | dimensions | Spearman vs full | G-Vendi |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in agree:
        lines.append(
            f"| {r['subset']} | {r['params']:,} | {r['spearman_vs_full']} | {r['g_vendi_raw']} |"
        )
    lines.append("<!-- diversity:end -->")
    replace_section(RESULTS, "diversity", "\n".join(lines))


if __name__ == "__main__":
    main()
