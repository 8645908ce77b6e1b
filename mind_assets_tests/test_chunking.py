import itertools
import json

from mind_assets.corpus.chunking import chunk_text, protected_spans


def words(texts):
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


def test_protected_spans_cover_inline_display_and_environments():
    text = (
        r"Let $x+1$ be odd. $$\sum_i a_i$$ and \begin{align} a &= b \\ c &= d \end{align} done \$5."
    )
    spans = [text[a:b] for a, b in protected_spans(text)]
    assert spans == ["$x+1$", r"$$\sum_i a_i$$", r"\begin{align} a &= b \\ c &= d \end{align}"]


def test_nested_environments_are_one_span():
    text = r"\begin{proof} x \begin{proof} y \end{proof} z \end{proof} after"
    assert [text[a:b] for a, b in protected_spans(text)] == [text[: text.index(" after")]]


def test_stray_dollar_across_paragraphs_is_not_math():
    text = "It costs $5.\n\nAnother paragraph with $x$."
    assert [text[a:b] for a, b in protected_spans(text)] == ["$x$"]


def test_chunks_stay_near_target_and_cut_on_paragraphs():
    paragraphs = [" ".join(f"w{i}_{j}" for j in range(40)) + "." for i in range(10)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, words, target_tokens=100, overlap_tokens=0)
    assert [c.n_tokens for c in chunks] == [80, 80, 80, 80, 80]
    assert all(c.text.endswith(".") for c in chunks)


def test_never_splits_inside_math_even_when_math_is_long():
    long_math = "$$" + " + ".join(f"a_{i}" for i in range(200)) + "$$"
    text = "Intro sentence here. " * 10 + "\n\n" + long_math + "\n\n" + "Outro words. " * 10
    chunks = chunk_text(text, words, target_tokens=50, overlap_tokens=0)
    assert any(long_math in c.text for c in chunks)
    for chunk in chunks:
        assert chunk.text.count("$$") % 2 == 0


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    text = " ".join(f"Sentence number {i} ends here." for i in range(40))
    chunks = chunk_text(text, words, target_tokens=50, overlap_tokens=10)
    assert len(chunks) > 2
    for previous, current in itertools.pairwise(chunks):
        assert current.start < previous.end  # windows overlap


def test_real_napkin_sections_are_never_cut_inside_math():
    from mind_assets_tests.conftest import NAPKIN

    with NAPKIN.open() as handle:
        docs = [json.loads(next(handle))["text"] for _ in range(60)]
    for text in docs:
        spans = protected_spans(text)
        for chunk in chunk_text(text, words, target_tokens=120, overlap_tokens=0):
            for start, end in spans:
                assert not (start < chunk.start < end), "chunk starts inside a math span"
                assert not (start < chunk.end < end), "chunk ends inside a math span"
