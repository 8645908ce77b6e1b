"""Blend arithmetic: how many tokens each source contributes to a phase, and how many epochs.

A source wants `share × phase budget` tokens but can give at most `available × max_epochs`. A
source that cannot fill its share is capped and the shortfall is redistributed pro rata (by
share) over the sources that still have room, repeatedly, until every token is placed. When the
sources together cannot fill the phase, that is an error, not a silently smaller blend.
"""

from __future__ import annotations

from dataclasses import dataclass


class ImpossibleBlendError(ValueError):
    """The sources of a phase cannot fill its budget within their epoch caps."""


@dataclass(frozen=True)
class SourceSupply:
    name: str
    share: float
    available_tokens: int
    max_epochs: float

    @property
    def capacity(self) -> float:
        return self.available_tokens * self.max_epochs


@dataclass(frozen=True)
class SourceAllocation:
    name: str
    target_share: float
    tokens: float  # tokens the phase draws from the source
    weight: float  # tokens / phase budget: the sampling weight
    epochs: float  # tokens / available tokens
    capped: bool


def allocate_phase(
    phase: str, budget: float, supplies: list[SourceSupply]
) -> list[SourceAllocation]:
    if budget <= 0:
        raise ValueError(f"phase {phase!r}: budget must be positive, got {budget}")
    capacity = sum(s.capacity for s in supplies)
    if capacity + 1e-9 < budget:
        detail = ", ".join(
            f"{s.name}: {s.available_tokens} tokens x {s.max_epochs:g} epochs" for s in supplies
        )
        raise ImpossibleBlendError(
            f"phase {phase!r} needs {budget:,.0f} tokens but its sources hold at most "
            f"{capacity:,.0f} within their epoch caps ({detail}); lower the budget, raise "
            "max_epochs, or add data"
        )
    tokens = {s.name: s.share * budget for s in supplies}
    capped: set[str] = set()
    while True:
        overflow = 0.0
        for s in supplies:
            if s.name not in capped and tokens[s.name] > s.capacity + 1e-9:
                overflow += tokens[s.name] - s.capacity
                tokens[s.name] = s.capacity
                capped.add(s.name)
        if overflow <= 1e-9:
            break
        open_sources = [s for s in supplies if s.name not in capped]
        open_share = sum(s.share for s in open_sources)
        for s in open_sources:
            tokens[s.name] += overflow * s.share / open_share
    return [
        SourceAllocation(
            name=s.name,
            target_share=s.share,
            tokens=tokens[s.name],
            weight=tokens[s.name] / budget,
            epochs=tokens[s.name] / s.available_tokens if s.available_tokens else 0.0,
            capped=s.name in capped,
        )
        for s in supplies
    ]
