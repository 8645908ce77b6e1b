from mind_assets.conversations.parsing import parse_turns


def test_declared_speakers_with_markdown_bold_and_continuation_lines():
    text = "**Teacher:** Let us start.\nWe define $x$.\n\n**Student:** Why $x$?\nTeacher: Because."
    turns = parse_turns(text, ["Teacher", "Student"])
    assert [(t.speaker, t.text) for t in turns] == [
        ("Teacher", "Let us start.\nWe define $x$."),
        ("Student", "Why $x$?"),
        ("Teacher", "Because."),
    ]


def test_renamed_speakers_are_found_when_they_recur():
    text = "Alice: hi\nBob: hello\nAlice: so $a^2$\nBob: yes"
    assert [t.speaker for t in parse_turns(text, ["Teacher", "Student"])] == [
        "Alice",
        "Bob",
        "Alice",
        "Bob",
    ]


def test_math_labels_are_not_speakers():
    text = "Definition: a group.\nTheorem: it is.\nDefinition: again.\nTheorem: again."
    assert parse_turns(text) == []


def test_prose_without_speakers_yields_no_turns():
    assert parse_turns("Just a paragraph about primes.\nAnother line.") == []


def test_declared_labels_with_a_leading_article_are_turns():
    text = "The Interviewer: What is $x$?\nthe expert: It is $2$.\nInterviewer: Why?"
    turns = parse_turns(text, ["Interviewer", "Expert"])
    assert [(t.speaker, t.text) for t in turns] == [
        ("Interviewer", "What is $x$?"),
        ("Expert", "It is $2$."),
        ("Interviewer", "Why?"),
    ]
