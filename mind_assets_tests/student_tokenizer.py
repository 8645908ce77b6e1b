"""A second tokenizer, the trainer's, unlike the engine model's: byte-level BPE trained on napkin
sections in a second, saved as a Hugging Face tokenizer directory. Blends that name it prove
that their token counts and Megatron ids follow the spec's tokenizer, not the teacher's."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mind_assets_tests.conftest import NAPKIN

EOS = "<|end_of_document|>"


def write_student_tokenizer(directory: Path, vocab_size: int = 3000) -> Path:
    """Train the tokenizer on the napkin sections and save it to `directory`."""
    texts = [json.loads(line)["text"] for line in NAPKIN.open()]
    bpe = Tokenizer(models.BPE())
    # Byte-level: every text round-trips exactly, LaTeX and all.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS)
    tokenizer.save_pretrained(str(directory))
    return directory
