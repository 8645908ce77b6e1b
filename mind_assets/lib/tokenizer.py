"""Tokenizers: the engine model's own (chunk sizes and budgets that match what the engine sees)
and a blend's (the trainer's, which its spec names), identified by a fingerprint of the
vocabulary, and a pool of worker processes that encodes batches on every core.

A blend's tokenizer is loaded with transformers once, in a short child process unless this one
has transformers already, for the few facts the blend path needs (`TokenizerFacts`); from then
on it encodes with the `tokenizers` library alone, so a process that builds or exports a blend
never holds transformers and the torch that transformers 5 imports."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Token counts of a batch of texts, in order.
TokenCounter = Callable[[Sequence[str]], list[int]]

# One encoded batch: tokens per row, and every row's ids end to end.
Encoded = tuple[np.ndarray, np.ndarray]

# Megatron stores ids as uint16 below this vocabulary size, int32 above (DType.optimal_dtype).
UINT16_VOCAB_LIMIT = 65500


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


def token_dtype(vocab_size: int) -> np.dtype:
    """How ids of a vocabulary this size are stored, as megatron-core stores them."""
    return np.dtype(np.uint16 if vocab_size < UINT16_VOCAB_LIMIT else np.int32)


def fingerprint_of(tokenizer: Any) -> str:
    """sha256 of what decides a tokenizer's ids: its full definition (vocabulary, merges,
    normalizer, pre-tokenizer, special tokens) for a fast tokenizer, else its vocabulary and
    special tokens. Truncation and padding are call settings, not the tokenizer, and are left
    out."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
    else:
        definition = {"vocab": sorted(tokenizer.get_vocab().items())}
    definition["special_tokens"] = sorted(tokenizer.all_special_tokens)
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


class BlendTokenizer(Protocol):
    """What a blend counts and encodes with. Implementations must pickle small (they are sent
    to worker processes) and load what they need on first use in each process."""

    name: str  # as a blend spec names it: a Hugging Face id or a directory

    @property
    def fingerprint(self) -> str: ...

    @property
    def eos_id(self) -> int | None: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Encoded: ...

    def save(self, directory: Path) -> None: ...

    def id_to_token(self, token_id: int) -> str: ...

    def worker_encoder(self) -> Callable[[Sequence[str]], Encoded]:
        """What a worker process encodes with: picklable, small, and giving the ids `encode`
        gives."""
        ...


@dataclass
class BackendEncoder:
    """A fast tokenizer's backend rebuilt from its serialized definition with the `tokenizers`
    library alone: a worker that encodes with it imports neither transformers nor the torch
    that transformers pulls in (about 170 MB a worker while encoding instead of 670)."""

    definition: str
    dtype: str
    _backend: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"definition": self.definition, "dtype": self.dtype, "_backend": None}

    def __call__(self, texts: Sequence[str]) -> Encoded:
        if self._backend is None:
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(self.definition)
        return encode_with_backend(self._backend, texts, np.dtype(self.dtype))


def encode_with_backend(backend: Any, texts: Sequence[str], dtype: np.dtype) -> Encoded:
    # The fast path skips the character offsets, which only alignment needs.
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return flatten([e.ids for e in encode_batch(list(texts), add_special_tokens=False)], dtype)


@dataclass(frozen=True)
class TokenizerFacts:
    """What the blend path needs of a Hugging Face tokenizer, worked out once where transformers
    is loaded: its fingerprint, vocabulary size, end-of-document id, the serialized definition
    of its fast backend (None for a slow tokenizer), and a directory holding its
    `save_pretrained` files."""

    fingerprint: str
    vocab_size: int
    eos_id: int | None
    definition: str | None
    saved: Path


FACTS_FILE = "mind-tokenizer-facts.json"  # beside the saved files, while they are made
CHILD_ERROR = "mind-tokenizer-error:"  # what starts the child process's message on failure


def describe_tokenizer(path: str, saved: Path) -> TokenizerFacts:
    """Load the tokenizer at `path` with transformers, save it into `saved`, and say what it
    is."""
    tokenizer = load_tokenizer(path)
    tokenizer.save_pretrained(str(saved))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    return TokenizerFacts(
        fingerprint=fingerprint_of(tokenizer),
        vocab_size=len(tokenizer),
        eos_id=None if eos is None else int(eos),
        definition=None if backend is None else backend.to_str(),
        saved=saved,
    )


@lru_cache(maxsize=8)
def tokenizer_facts(path: str) -> TokenizerFacts:
    """The facts of the tokenizer at `path`, once per process. Worked out here when this
    process has transformers loaded already (a step beside the engine); otherwise in a short
    child process, because transformers 5 imports torch, and a blend export that held ~500 MB
    of torch for three numbers and a definition string would need that much more memory."""
    saved = Path(tempfile.mkdtemp(prefix="mind-tokenizer-"))
    atexit.register(shutil.rmtree, saved, True)
    if "transformers" in sys.modules:
        return describe_tokenizer(path, saved)
    done = subprocess.run(
        [sys.executable, "-m", "mind_assets.lib.tokenizer", path, str(saved)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        # The child's own message (after any warnings), else the last line of its traceback.
        said = done.stderr.strip()
        reason = said.partition(CHILD_ERROR)[2].strip() or (
            said.splitlines()[-1] if said else f"exit status {done.returncode}"
        )
        raise TokenizerError(reason)
    facts = json.loads((saved / FACTS_FILE).read_text())
    (saved / FACTS_FILE).unlink()
    return TokenizerFacts(**facts, saved=saved)


@dataclass(frozen=True)
class HFTokenizer:
    """A Hugging Face tokenizer loaded from `path` (a local directory or a Hub id), known to
    blends by `name`. A fast tokenizer (every current one) encodes with the `tokenizers`
    library alone, from its definition, so the process never imports transformers for it."""

    name: str
    path: str
    _backend: list[Any] = field(default_factory=list, compare=False, repr=False)

    def load(self) -> Any:
        """The transformers tokenizer itself (imports transformers, and with it torch)."""
        return load_tokenizer(self.path)

    @property
    def facts(self) -> TokenizerFacts:
        return tokenizer_facts(self.path)

    @property
    def fingerprint(self) -> str:
        return self.facts.fingerprint

    @property
    def eos_id(self) -> int | None:
        return self.facts.eos_id

    @property
    def vocab_size(self) -> int:
        return self.facts.vocab_size

    def backend(self) -> Any:
        """The fast backend rebuilt from the definition (None for a slow tokenizer)."""
        if not self._backend:
            definition = self.facts.definition
            if definition is None:
                self._backend.append(None)
            else:
                from tokenizers import Tokenizer

                self._backend.append(Tokenizer.from_str(definition))
        return self._backend[0]

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Ids without special tokens (the only one a document gets is its end-of-document id,
        added by the Megatron export), as the tokenizer's own call would give them."""
        backend = self.backend()
        if backend is not None:
            return encode_with_backend(backend, texts, token_dtype(self.vocab_size))
        rows = self.load()(list(texts), add_special_tokens=False)["input_ids"]
        return flatten(rows, token_dtype(self.vocab_size))

    def worker_encoder(self) -> Callable[[Sequence[str]], Encoded]:
        definition = self.facts.definition
        if definition is None:
            return self.encode  # a slow tokenizer: the worker loads it with transformers
        return BackendEncoder(definition, token_dtype(self.vocab_size).name)

    def save(self, directory: Path) -> None:
        """The tokenizer's `save_pretrained` files, as saved when its facts were made."""
        shutil.copytree(self.facts.saved, directory, dirs_exist_ok=True)

    def id_to_token(self, token_id: int) -> str:
        backend = self.backend()
        if backend is None:
            return str(self.load().convert_ids_to_tokens(token_id))
        return str(backend.id_to_token(token_id))


def flatten(rows: Sequence[Sequence[int]], dtype: np.dtype) -> Encoded:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    total = int(lengths.sum())
    ids = np.fromiter((i for r in rows for i in r), dtype=dtype, count=total)
    return lengths, ids


def worker_count(requested: int | None) -> int:
    """`requested`, or the CPUs this process may run on (its affinity mask, which a container's
    CPU set narrows), at least 1."""
    if requested:
        return max(1, requested)
    with contextlib.suppress(AttributeError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_WORKER_ENCODER: list[Callable[[Sequence[str]], Encoded]] = []


def _start_worker(encoder: Callable[[Sequence[str]], Encoded]) -> None:
    # One core per worker: the pool is the parallelism, so the tokenizer's own threads would
    # only compete with the other workers.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    _WORKER_ENCODER[:] = [encoder]


def _encode_in_worker(texts: list[str]) -> Encoded:
    return _WORKER_ENCODER[0](texts)


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


class EncodingPool:
    """Encodes batches of texts in `workers` processes, results in input order, at most a few
    batches in flight per worker so memory stays bounded by the batch size. With one worker the
    batches are encoded here, on one core."""

    def __init__(self, tokenizer: BlendTokenizer, workers: int) -> None:
        self.tokenizer = tokenizer
        self.workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> EncodingPool:
        if self.workers > 1:
            # spawn, not fork: the parent may run threads (Dagster's, the tokenizer's own).
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.tokenizer.worker_encoder(),),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def map(self, batches: Iterable[list[str]]) -> Iterator[Encoded]:
        if self._executor is None:
            with _single_threaded():
                for texts in batches:
                    yield self.tokenizer.encode(texts)
            return
        pending: deque[Future[Encoded]] = deque()
        for texts in batches:
            pending.append(self._executor.submit(_encode_in_worker, texts))
            if len(pending) >= 3 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded; the message names it and where it was looked for."""


def resolve_tokenizer(
    name: str | None, *, engine_name: str, engine_path: Callable[[], str], base_dir: Path
) -> HFTokenizer:
    """The tokenizer a blend spec names: None or the engine model's name means the engine
    model's (loaded from where the engine loads it); a directory, absolute or relative to
    `base_dir` (the spec's folder); otherwise a Hugging Face id. Loaded here, so a name that
    does not load fails before any work."""
    if name is None or name == engine_name:
        tokenizer = HFTokenizer(engine_name, engine_path())
        where = f"the engine model's, at {tokenizer.path}"
    else:
        directory = Path(name) if Path(name).is_absolute() else base_dir / name
        if directory.is_dir():
            tokenizer = HFTokenizer(name, str(directory))
            where = f"the directory {directory}"
        else:
            tokenizer = HFTokenizer(name, name)
            where = f"no directory {directory}, so a Hugging Face id"
    try:
        tokenizer.facts  # noqa: B018 - loads it, in a child process unless loaded here already
    except (OSError, ValueError) as error:
        raise TokenizerError(
            f"tokenizer {tokenizer.name!r} ({where}) does not load: {error}"
        ) from error
    return tokenizer


def _describe_main(path: str, saved: str) -> None:
    """The child process of `tokenizer_facts`: the facts as JSON beside the saved files."""
    try:
        facts = describe_tokenizer(path, Path(saved))
    except (OSError, ValueError) as error:
        raise SystemExit(f"{CHILD_ERROR} {error}") from None
    record = {k: v for k, v in facts.__dict__.items() if k != "saved"}
    (Path(saved) / FACTS_FILE).write_text(json.dumps(record))


if __name__ == "__main__":
    _describe_main(sys.argv[1], sys.argv[2])
