"""G-Vendi and Prismatic selection: known answers, the random projection, feature caching, and
the Prismatic filter on pools with a dominant cluster (synthetic, then real proxy gradients)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mind_assets.blends.families import FAMILIES
from mind_assets.diversity.scores import distinct_ngram_ratio, vendi_score
from mind_assets.diversity.targets import DiversityTargetError, parse_target, target_samples
from mind_assets.llm.embedded_model import prepare_embedded_model
from mind_assets.llm.features import Sample, cached_features
from mind_assets.llm.gradients import FeatureConfig, GradientFeaturizer, RademacherProjection
from mind_assets.task_qa.prismatic import (
    cluster_seed_picker,
    cluster_shares,
    prismatic_filter,
    spherical_kmeans,
)
from mind_assets_tests.conftest import MODELS_DIR, napkin_sections
from mind_assets_tests.test_lineage import ROWS, key_of, row_id, write_declared_families

# --- known answers ------------------------------------------------------------------------------


def test_copies_of_one_sample_score_one():
    row = np.random.default_rng(0).normal(size=(1, 1024))
    assert vendi_score(np.repeat(row, 50, axis=0)) == pytest.approx(1.0, abs=1e-6)


def test_orthogonal_samples_score_their_count():
    for n in (2, 17, 64):
        assert vendi_score(np.eye(1024)[:n] * 3.0) == pytest.approx(n, rel=1e-6)


def test_score_rises_monotonically_as_distinct_samples_are_mixed_in():
    rng = np.random.default_rng(1)
    base = rng.normal(size=1024)
    distinct = rng.normal(size=(40, 1024))
    scores = []
    for k in range(0, 41, 5):
        pool = np.vstack([np.repeat(base[None], 40 - k, axis=0), distinct[:k]])
        scores.append(vendi_score(pool))
    assert all(b > a for a, b in itertools.pairwise(scores)), scores
    assert scores[0] == pytest.approx(1.0) and scores[-1] > 20


def test_scale_of_a_row_does_not_matter():
    x = np.random.default_rng(2).normal(size=(10, 64))
    scaled = x * np.arange(1, 11)[:, None]
    assert vendi_score(x) == pytest.approx(vendi_score(scaled))


def test_distinct_ngram_ratio():
    assert distinct_ngram_ratio(["a b c", "a b c"], 2) == 0.5
    assert distinct_ngram_ratio(["a b c d"], 2) == 1.0
    assert distinct_ngram_ratio([""], 2) == 0.0


# --- projection and cache -------------------------------------------------------------------------


def test_rademacher_projection_is_seeded_signed_and_preserves_norms():
    projection = RademacherProjection(200_000, 1024, seed=7, chunk=1 << 16)
    signs = projection.signs(0, 4)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert np.array_equal(signs, RademacherProjection(200_000, 1024, 7, 1 << 16).signs(0, 4))
    assert not np.array_equal(signs, RademacherProjection(200_000, 1024, 8, 1 << 16).signs(0, 4))
    x = np.random.default_rng(3).normal(size=(5, 200_000)).astype(np.float32)
    ratio = np.linalg.norm(projection(x), axis=1) / np.linalg.norm(x, axis=1)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio  # Johnson-Lindenstrauss, d = 1024


def one_draw_signs(seed: int, index: int, rows: int, dim: int) -> np.ndarray:
    """A chunk's signs as one draw of its whole stream (how they were first defined)."""
    count = rows * dim
    raw = np.random.default_rng([seed, index]).bit_generator.random_raw((count + 1) // 2)
    words = raw.view(np.uint32)[:count]
    return np.where(words >> 31, np.float32(-1.0), np.float32(1.0)).reshape(rows, dim)


@pytest.mark.parametrize("dim", [1024, 1023])  # an odd dim leaves half a draw per slice
def test_the_projection_in_cache_sized_slices_is_the_one_draw_matrix(monkeypatch, dim):
    n_params, chunk = 5_001, 1_536  # the last slice of the last chunk: 93 rows
    projection = RademacherProjection(n_params, dim, seed=11, chunk=chunk, slice_rows=100)
    blocks = [
        one_draw_signs(11, index, min(start + chunk, n_params) - start, dim)
        for index, start in enumerate(range(0, n_params, chunk))
    ]
    assert all(
        np.array_equal(projection.signs(i, len(block)), block) for i, block in enumerate(blocks)
    )
    x = np.random.default_rng(4).normal(size=(3, n_params)).astype(np.float32)
    expected = x.astype(np.float64) @ np.concatenate(blocks).astype(np.float64) / np.sqrt(dim)
    projected = projection(x)
    assert np.allclose(projected, expected, rtol=1e-4, atol=1e-4)
    # Chunks are summed in order, so one core gives the very same floats as several.
    monkeypatch.setattr("mind_assets.llm.gradients.worker_count", lambda requested: 1)
    assert np.array_equal(projection(x), projected)


def test_features_are_cached_and_only_new_or_changed_rows_are_computed(tmp_path):
    calls = []

    def compute(pairs):
        calls.append(len(pairs))
        return np.array([[len(p) + len(c), 1.0] for p, c in pairs], dtype=np.float32), None

    samples = [Sample(f"r{i}", "", f"text {i}") for i in range(5)]
    cache = tmp_path / "features.parquet"
    first = cached_features(samples, cache, "cfg", compute)
    again = cached_features(samples, cache, "cfg", compute)
    changed = cached_features([*samples[:4], Sample("r4", "", "changed")], cache, "cfg", compute)
    other = cached_features(samples, cache, "other-config", compute)
    assert calls == [5, 1, 5]
    assert (first.computed, again.computed, again.reused, changed.computed) == (5, 0, 5, 1)
    assert np.array_equal(first.features, again.features) and other.computed == 5


def test_target_names_are_validated():
    assert parse_target("conversations:napkin:debate") == ("conversations", ["napkin", "debate"])
    assert parse_target("blend:example:phase1") == ("blend", ["example", "phase1"])
    for bad in ("conversations:napkin", "task_qa:a:b", "nothing:x", "conversations:..:debate"):
        with pytest.raises((DiversityTargetError, ValueError)):
            parse_target(bad)


def test_a_blend_target_reads_its_manifest_files_relative_to_the_data_root(tmp_path):
    data_dir = tmp_path / "data"
    part = data_dir / "raw_documents" / "napkin.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": ["one", "two"]}), part)
    manifest = data_dir / "blend_manifest" / "mix" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    source = {
        "name": "raw",
        "files": [{"partition": "napkin", "path": "raw_documents/napkin.parquet"}],
    }
    manifest.write_text(json.dumps({"phases": [{"name": "phase1", "sources": [source]}]}))
    samples = target_samples(data_dir, "blend:mix:phase1")
    assert [(s.row_id, s.completion) for s in samples] == [
        ("raw:napkin:0", "one"),
        ("raw:napkin:1", "two"),
    ]
    with pytest.raises(DiversityTargetError, match="has no phase 'phase9'"):
        target_samples(data_dir, "blend:mix:phase9")


# --- Prismatic ------------------------------------------------------------------------------------


def dominant_pool(rng, n_dominant, n_rare, rare_directions):
    """A mode of near-duplicates (as template-made data forms) and a spread-out remainder."""
    centre = rare_directions[-1]
    dominant = centre + 0.01 * rng.normal(size=(n_dominant, 64))
    rare = np.vstack(
        [d + 0.3 * rng.normal(size=64) for d in rare_directions[rng.integers(0, 6, n_rare)]]
    )
    return np.vstack([dominant, rare]), np.array([0] * n_dominant + [1] * n_rare)


def test_prismatic_filter_raises_the_share_of_under_represented_regions():
    rng = np.random.default_rng(4)
    directions = rng.normal(size=(7, 64))
    pool, _ = dominant_pool(rng, 160, 40, directions)
    clustering = spherical_kmeans(pool, seed=0)
    assert clustering.k == 20  # 10% of the pool
    new, is_rare = dominant_pool(rng, 80, 20, directions)
    decisions = prismatic_filter(clustering, new, keep_fraction=0.5)
    kept = np.array([d.kept for d in decisions])
    before, after = is_rare.mean(), is_rare[kept].mean()
    print(f"synthetic pool: rare share before {before:.2f}, after {after:.2f}")
    assert after >= 0.5 > before + 0.2
    assert all(d.reason and d.cluster_id >= 0 for d in decisions)
    favoured = clustering.smallest(0.5)
    labels = np.array([d.cluster_id for d in decisions])
    assert cluster_shares(labels[kept], favoured) == 1.0


def test_generation_mode_draws_seeds_from_one_small_cluster():
    rng = np.random.default_rng(5)
    pool, is_rare = dominant_pool(rng, 90, 30, rng.normal(size=(7, 64)))
    clustering = spherical_kmeans(pool, seed=0)
    pick = cluster_seed_picker(clustering, fraction=0.1)
    rows = [{"seed_id": str(i), "rare": bool(r)} for i, r in enumerate(is_rare)]
    small = clustering.smallest(0.1)
    for seed in range(10):
        chosen, cluster, reason = pick(seed, rows, 2)
        assert cluster in small and f"cluster {cluster}" in reason and len(chosen) == 2
        assert int(chosen[0]["seed_id"]) in np.flatnonzero(clustering.labels == cluster)


# --- real proxy gradients -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy():
    model = prepare_embedded_model(MODELS_DIR)
    # The suite's 256 dimensions (see TEST_ENVIRONMENT), not the default 1,024.
    return GradientFeaturizer(FeatureConfig(str(model), last_blocks=1, max_tokens=96, dim=256))


def napkin_texts(n: int) -> list[str]:
    return [section["text"][:600] for section in napkin_sections(n)]


def test_real_gradients_known_answers(proxy):
    texts = napkin_texts(7)
    copies, stats = proxy.features([("", texts[0])] * 4)
    assert vendi_score(copies) == pytest.approx(1.0, abs=1e-3)
    assert stats.samples == 4 and stats.peak_rss_mb > 0
    distinct, _ = proxy.features([("", t) for t in texts[1:]])
    scores = [
        vendi_score(np.vstack([np.repeat(copies[:1], 6 - k, 0), distinct[:k]])) for k in range(7)
    ]
    assert all(b > a for a, b in itertools.pairwise(scores)), scores
    # Only the completion's tokens carry loss: the prompt changes the gradient through context.
    with_prompt, _ = proxy.features([("Summarise:", texts[0])])
    assert not np.allclose(with_prompt[0], copies[0])


def test_prismatic_filter_on_real_gradients_of_napkin_text(proxy):
    texts = napkin_texts(20)
    words = texts[0].split()
    rng = np.random.default_rng(6)

    def variant() -> str:  # the dominant region: one section, lightly perturbed
        keep = rng.random(len(words)) > 0.1
        return " ".join(w for w, k in zip(words, keep, strict=True) if k)

    # Half the sizes this test began with (pool 30 + 10, new 24 + 8): each is a real backward
    # pass, and the rare share after the filter was 1.00 at both sizes.
    pool_texts = [variant() for _ in range(15)] + texts[1:6]
    new_texts = [variant() for _ in range(12)] + texts[11:15]
    is_rare = np.array([0] * 12 + [1] * 4)
    pool, _ = proxy.features([("", t) for t in pool_texts])
    new, _ = proxy.features([("", t) for t in new_texts])
    clustering = spherical_kmeans(pool, seed=0)
    kept = np.array([d.kept for d in prismatic_filter(clustering, new, keep_fraction=0.5)])
    before, after = is_rare.mean(), is_rare[kept].mean() if kept.any() else 0.0
    print(f"real napkin gradients: under-represented share before {before:.2f}, after {after:.2f}")
    assert after > before + 0.2


def test_a_partition_of_every_declared_family_is_a_diversity_target(tmp_path):
    """Targets come from the output declarations: each family's partition keys in path order;
    the completion (and the prompt, for rows that answer a question) are the declared columns."""
    data_dir = tmp_path / "data"
    write_declared_families(data_dir)
    for name, family in FAMILIES.items():
        keys = [key_of(dim) for dim in family.dims]
        samples = target_samples(data_dir, ":".join([name, *keys]))
        assert [s.row_id for s in samples] == [row_id(family, i) for i in range(ROWS)]
        if family.prompt_column:
            assert all(s.prompt == "{}" for s in samples)  # the filler of a string column
        if family.completion_column is None:
            assert samples[0].completion == f"text of {name} row 0"
