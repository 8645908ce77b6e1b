"""Blend specs fail before any work, with a message naming the file and the field."""

import pytest

from mind_assets.blends.spec import BlendSpecError, check_selection, load_blend_spec
from mind_assets.settings import PROJECT_DIR

GOOD = """
name: b
total_tokens: 1000
phases:
  - name: p1
    fraction: 1.0
    sources:
      - {name: raw, asset: raw_documents, quality_tier: low, share: 0.5, max_epochs: 2}
      - name: mind
        asset: filtered_conversations
        selection: {styles: [debate], shards: [s1]}
        quality_tier: high
        share: 0.5
        max_epochs: 2
"""


def write(tmp_path, text):
    path = tmp_path / "b.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_blend_is_valid():
    spec = load_blend_spec(PROJECT_DIR / "blends" / "example.yaml")
    assert [p.name for p in spec.phases] == ["phase1", "phase2"]


def test_good_spec_loads(tmp_path):
    assert load_blend_spec(write(tmp_path, GOOD)).total_tokens == 1000
    lenient = GOOD.replace("    fraction: 1.0", "    fraction: 1.0\n    min_quality_tier: low")
    assert load_blend_spec(write(tmp_path, lenient)).phases[0].min_quality_tier == "low"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("asset: raw_documents", "asset: raw_docs"), r"b\.yaml: phases\.0\.sources\.0\.asset"),
        (
            ("styles: [debate]", "styles: [monologue]"),
            r"phases\.0\.sources\.1 \(mind\)\.selection\.styles: unknown style",
        ),
        (("share: 0.5, max_epochs", "share: 0.6, max_epochs"), r"phases\.0: .*shares sum to 1\.1"),
        (
            ("max_epochs: 2}", "max_epochs: -1}"),
            r"phases\.0\.sources\.0\.max_epochs: Input should be greater than 0",
        ),
        (("total_tokens: 1000", "total_tokens: 0"), r"total_tokens"),
        (("    fraction: 1.0", "    fraction: 0.5"), r"fractions sum to 0\.5"),
        (("phases:", "phases: ["), r"YAML syntax error"),
        # Phase and source names become export file names and Megatron data-path prefixes.
        (("name: raw,", "name: raw data,"), r"phases\.0\.sources\.0\.name: .*invalid source name"),
        (("name: p1", "name: megatron"), r"phases\.0\.name: .*'megatron' is reserved"),
        (("name: mind", "name: raw"), r"phases\.0: .*source name\(s\) \['raw'\] used twice"),
        # A phase that requires a quality tier refuses a source below it.
        (
            ("    fraction: 1.0", "    fraction: 1.0\n    min_quality_tier: medium"),
            r"phases\.0: .*phase 'p1' takes only medium quality and up; below it: raw \(low\)",
        ),
    ],
)
def test_bad_specs_fail_naming_the_field(tmp_path, change, message):
    with pytest.raises(BlendSpecError, match=message):
        load_blend_spec(write(tmp_path, GOOD.replace(*change)))


def test_unknown_shard_fails_before_any_work(tmp_path):
    path = write(tmp_path, GOOD)
    spec = load_blend_spec(path)
    with pytest.raises(
        BlendSpecError, match=r"sources\.1 \(mind\)\.selection\.shards: unknown shard\(s\) \['s1'\]"
    ):
        check_selection(spec, path, {"shard": {"other"}})
