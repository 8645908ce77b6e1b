import pytest

from mind_assets.blends.arithmetic import ImpossibleBlendError, SourceSupply, allocate_phase


def by_name(allocations):
    return {a.name: a for a in allocations}


def test_shares_are_met_when_every_source_has_room():
    result = by_name(
        allocate_phase(
            "p",
            1000,
            [
                SourceSupply("a", 0.6, 10_000, 1),
                SourceSupply("b", 0.4, 10_000, 1),
            ],
        )
    )
    assert result["a"].tokens == pytest.approx(600) and result["b"].tokens == pytest.approx(400)
    assert result["a"].weight == pytest.approx(0.6) and result["a"].epochs == pytest.approx(0.06)
    assert not result["a"].capped


def test_capped_source_shortfall_is_redistributed_pro_rata():
    # a wants 500 but holds 100 x 2 epochs = 200; its 300 shortfall goes to b and c by share.
    result = by_name(
        allocate_phase(
            "p",
            1000,
            [
                SourceSupply("a", 0.5, 100, 2),
                SourceSupply("b", 0.3, 10_000, 1),
                SourceSupply("c", 0.2, 10_000, 1),
            ],
        )
    )
    assert result["a"].tokens == pytest.approx(200) and result["a"].capped
    assert result["a"].epochs == pytest.approx(2.0)
    assert result["b"].tokens == pytest.approx(300 + 300 * 0.6)
    assert result["c"].tokens == pytest.approx(200 + 300 * 0.4)
    assert sum(a.tokens for a in result.values()) == pytest.approx(1000)


def test_redistribution_cascades_when_the_receiver_fills_up():
    result = by_name(
        allocate_phase(
            "p",
            1000,
            [
                SourceSupply("a", 0.5, 100, 1),
                SourceSupply("b", 0.25, 400, 1),
                SourceSupply("c", 0.25, 10_000, 1),
            ],
        )
    )
    assert result["a"].tokens == pytest.approx(100) and result["b"].tokens == pytest.approx(400)
    assert result["c"].tokens == pytest.approx(500)
    assert result["a"].capped and result["b"].capped and not result["c"].capped


def test_impossible_phase_fails_with_a_clear_message():
    with pytest.raises(
        ImpossibleBlendError,
        match=r"phase 'p2' needs 1,000 tokens but its sources hold at most 300",
    ):
        allocate_phase("p2", 1000, [SourceSupply("a", 0.5, 100, 1), SourceSupply("b", 0.5, 100, 2)])


def test_exactly_full_capacity_is_possible():
    result = by_name(
        allocate_phase("p", 300, [SourceSupply("a", 0.5, 100, 1), SourceSupply("b", 0.5, 100, 2)])
    )
    assert result["a"].tokens == pytest.approx(100) and result["b"].tokens == pytest.approx(200)
