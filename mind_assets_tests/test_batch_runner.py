"""Unit tests of resumable generation with a counting fake engine (the real engine is proven in
test_e2e_*)."""

import pytest

from mind_assets.llm.batch_runner import RequestStore, generate_resumable
from mind_assets.llm.requests import ChatResult, SamplingSpec, derive_seed, make_request


def requests(n):
    return [
        make_request(
            "m",
            "v1",
            SamplingSpec(temperature=0.7, top_p=0.9, max_tokens=8, seed=i),
            [{"role": "user", "content": f"doc {i} " + "x" * i}],
        )
        for i in range(n)
    ]


class CountingEngine:
    def __init__(self, fail_after_batches=None):
        self.calls = []
        self.fail_after_batches = fail_after_batches

    def __call__(self, batch, progress=None):
        if self.fail_after_batches is not None and len(self.calls) >= self.fail_after_batches:
            raise RuntimeError("engine crashed")
        self.calls.append([r.request_hash for r in batch])
        return [ChatResult(f"out {r.request_hash[:6]}", 3, 2, "stop") for r in batch]


def test_resume_regenerates_only_missing_batches(tmp_path):
    store = RequestStore(tmp_path / "req")
    reqs = requests(10)
    crashing = CountingEngine(fail_after_batches=1)
    with pytest.raises(RuntimeError):
        generate_resumable(reqs, crashing, store, batch_size=4)
    assert len(store.batch_files()) == 1
    first = set(crashing.calls[0])

    engine = CountingEngine()
    results, stats = generate_resumable(reqs, engine, store, batch_size=4)
    generated = {h for call in engine.calls for h in call}
    assert generated == {r.request_hash for r in reqs} - first
    assert (stats.reused, stats.generated) == (4, 6)
    assert set(results) == {r.request_hash for r in reqs}


def test_unchanged_rerun_generates_nothing(tmp_path):
    store = RequestStore(tmp_path / "req")
    reqs = requests(5)
    generate_resumable(reqs, CountingEngine(), store, batch_size=2)
    engine = CountingEngine()
    _, stats = generate_resumable(reqs, engine, store, batch_size=2)
    assert engine.calls == [] and stats.generated == 0 and stats.reused == 5


def test_batches_are_sorted_longest_first(tmp_path):
    engine = CountingEngine()
    reqs = requests(6)
    generate_resumable(reqs, engine, RequestStore(tmp_path / "r"), batch_size=3)
    by_hash = {r.request_hash: r.approx_length for r in reqs}
    lengths = [by_hash[h] for call in engine.calls for h in call]
    assert lengths == sorted(lengths, reverse=True)


def test_request_hash_covers_prompt_version_seed_and_model():
    base = SamplingSpec(temperature=0.7, top_p=0.9, max_tokens=8, seed=1)
    msgs = [{"role": "user", "content": "x"}]
    h = make_request("m", "v1", base, msgs).request_hash
    assert h != make_request("m", "v2", base, msgs).request_hash
    assert h != make_request("m2", "v1", base, msgs).request_hash
    assert h != make_request("m", "v1", base.model_copy(update={"seed": 2}), msgs).request_hash
    assert h == make_request("m", "v1", base, msgs).request_hash


def test_seed_depends_on_chunk_and_style_only():
    assert derive_seed(0, "doc#0", "debate") == derive_seed(0, "doc#0", "debate")
    assert derive_seed(0, "doc#0", "debate") != derive_seed(0, "doc#0", "interview")
    assert derive_seed(0, "doc#0", "debate") != derive_seed(1, "doc#0", "debate")
