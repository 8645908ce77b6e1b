"""The embedded model is converted once, atomically, and reused."""

import pytest

from mind_assets.llm import embedded_model
from mind_assets.llm.embedded_model import is_prepared, prepare_embedded_model
from mind_assets_tests.conftest import MODELS_DIR


def test_conversion_is_cached_and_idempotent():
    first = prepare_embedded_model(MODELS_DIR)
    assert is_prepared(first)
    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert prepare_embedded_model(MODELS_DIR) == first
    assert weights.stat().st_mtime_ns == stamp  # not converted again
    assert weights.stat().st_size > 200_000_000  # bf16 weights, not the 4-bit GGUF


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(gguf, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(embedded_model, "_convert", crash)
    with pytest.raises(RuntimeError, match="mid-conversion"):
        prepare_embedded_model(tmp_path)
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
