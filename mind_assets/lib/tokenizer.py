"""The model's own tokenizer, for chunk sizes and token counts that match what the engine sees."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

# Token counts of a batch of texts, in order.
TokenCounter = Callable[[Sequence[str]], list[int]]


@lru_cache(maxsize=4)
def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def token_counter(model_path: str) -> TokenCounter:
    tokenizer = load_tokenizer(model_path)

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    return count
