"""Structured generation for task Q&A: schemas from the pydantic item models, carried by the
request (hashed, sent offline and to servers), and tolerant parsing of what comes back."""

from __future__ import annotations

import json

import pytest

from mind_assets.lib.prompts import PromptError, load_prompt
from mind_assets.llm.requests import SamplingSpec, make_request
from mind_assets.llm.server_pool import ServerPool, ServerPoolConfig
from mind_assets.settings import PROJECT_DIR
from mind_assets.task_qa.generation import to_candidates
from mind_assets.task_qa.parsing import (
    GeneratedEnrichment,
    GeneratedMultipleChoice,
    GeneratedOpenEnded,
    parse_json_reply,
    parse_structured_enrichment,
    parse_structured_item,
    response_schema,
)
from mind_assets.task_qa.stage import TaskQAPrompts

SAMPLING = SamplingSpec(temperature=0.8, top_p=0.95, max_tokens=64, seed=1)
MESSAGES = [{"role": "user", "content": "Write a question."}]


def test_schemas_come_from_the_item_models_and_close_within_bounds():
    schema = response_schema(GeneratedOpenEnded)
    assert schema["title"] == "open_ended_item"
    assert set(schema["required"]) == {"question", "solution", "final_answer"}
    assert schema["additionalProperties"] is False
    # Every string has a length cap, so a constrained reply can always close its JSON.
    for model in (GeneratedOpenEnded, GeneratedMultipleChoice, GeneratedEnrichment):
        text = json.dumps(response_schema(model))
        assert text.count('"type": "string"') == text.count('"maxLength"'), model.__name__


def test_the_schema_is_part_of_the_request_and_its_hash():
    plain = make_request("m", "v1", SAMPLING, MESSAGES)
    shaped = make_request(
        "m", "v1", SAMPLING, MESSAGES, json_schema=response_schema(GeneratedOpenEnded)
    )
    assert plain.json_schema == "" and plain.response_schema is None
    assert shaped.response_schema == response_schema(GeneratedOpenEnded)
    # The properties keep the model's order: decoding writes the solution before the answer.
    assert list(shaped.response_schema["properties"]) == ["question", "solution", "final_answer"]
    assert shaped.request_hash != plain.request_hash
    # Requests without a schema hash as they always did: stored results stay reusable.
    assert plain.request_hash == make_request("m", "v1", SAMPLING, MESSAGES).request_hash


@pytest.mark.parametrize(
    "text",
    [
        '{"question": "Q?", "solution": "2 + 2 = <<2+2=4>>4", "final_answer": "4"}',
        'Sure! Here it is:\n```json\n{"question": "Q?", "solution": "2 + 2 = 4",'
        ' "final_answer": "4"}\n```\nHope this helps.',
        'Here: {"question": "Q?", "solution": "2 + 2 = 4", "final_answer": "4"} done',
    ],
)
def test_replies_parse_bare_fenced_or_wrapped_in_chatter(text):
    item = parse_structured_item(text, generation_task=True)
    assert (item.error, item.question, item.solution, item.answer) == ("", "Q?", "2 + 2 = 4", "4")


def test_a_letter_answer_becomes_the_option_text():
    text = json.dumps({"question": "Pick", "options": ["red", "blue", "green"], "answer": "B"})
    item = parse_structured_item(text, generation_task=False)
    assert (item.error, item.choices, item.answer) == ("", ["red", "blue", "green"], "blue")


def test_a_reply_that_breaks_the_schema_names_the_field():
    parsed, error = parse_json_reply('{"question": "Q?", "solution": "s"}', GeneratedOpenEnded)
    assert parsed is None
    assert error == "JSON does not match GeneratedOpenEnded: final_answer: Field required"
    parsed, error = parse_json_reply('{"question": "Q?", "solution": ', GeneratedOpenEnded)
    assert parsed is None and error.startswith("invalid JSON:")
    [mc, open_form] = to_candidates(
        '{"question": "Q?", "solution": ', generation_task=True, seed=1, structured=True
    )
    assert mc.parse_error.startswith("invalid JSON") and open_form.parse_error == mc.parse_error


def test_a_string_closed_at_its_cap_is_a_cut_text_not_a_finished_one():
    at_cap = {"question": "q" * 600, "solution": "s", "final_answer": "1"}
    parsed, error = parse_json_reply(json.dumps(at_cap), GeneratedOpenEnded)
    assert (
        parsed is None and error == "GeneratedOpenEnded: question reached its length cap (cut off)"
    )
    options = {"question": "q", "options": ["a" * 160, "b"], "answer": "b"}
    assert "options[0] reached" in parse_json_reply(json.dumps(options), GeneratedMultipleChoice)[1]
    nested = {"reasoning": "r", "wrong_options": [{"option": "a", "why_wrong": "w" * 300}]}
    assert (
        "wrong_options[0].why_wrong" in parse_json_reply(json.dumps(nested), GeneratedEnrichment)[1]
    )
    nested["wrong_options"][0]["why_wrong"] = "w" * 299
    assert parse_json_reply(json.dumps(nested), GeneratedEnrichment)[0] is not None
    # A cut explanation is no explanation (its item then fails missing_reasoning).
    cut = parse_structured_enrichment('{"reasoning": "The sky is bl')
    assert (cut.reasoning, cut.distractors) == ("", [])


def test_a_server_that_ignored_the_schema_and_wrote_the_text_format_is_still_read():
    text = "Question: Tom has 3 bags of 6 apples. How many?\nSolution: 3 * 6 = 18.\n#### 18"
    item = parse_structured_item(text, generation_task=True)
    assert (item.error, item.answer) == ("", "18")
    enrichment = parse_structured_enrichment("Reasoning: because.\nWrong: red: it is blue.")
    assert enrichment.reasoning == "because." and enrichment.distractors == [("red", "it is blue.")]


def test_structured_enrichment():
    text = json.dumps(
        {
            "reasoning": "The sky scatters blue light.",
            "wrong_options": [{"option": "red", "why_wrong": "Red scatters least."}],
        }
    )
    enrichment = parse_structured_enrichment(text)
    assert enrichment.reasoning == "The sky scatters blue light."
    assert enrichment.distractors == [("red", "Red scatters least.")]


def test_structured_prompts_show_examples_that_satisfy_the_schema():
    prompts = TaskQAPrompts.load(
        PROJECT_DIR / "prompts", output_type="generate_until", structured=True
    )
    assert prompts.generate.output_format == prompts.enrich.output_format == "json"
    examples = [
        {"question": 'Ann has 3 < 5 "pens".', "rationale": "3 + 2 = 5", "answer": "5"},
        {"question": "Bo has 2.", "rationale": None, "answer": "2"},
    ]
    [message] = [
        m for m in prompts.generate.render(task="gsm8k", examples=examples) if m["role"] == "user"
    ]
    shown = [line for line in message["content"].splitlines() if line.startswith("{")]
    assert len(shown) == 2
    for line in shown:
        GeneratedOpenEnded.model_validate_json(line)
    assert '3 < 5 \\"pens\\"' in shown[0]  # JSON escaping, not HTML escaping
    mc = TaskQAPrompts.load(PROJECT_DIR / "prompts", output_type="multiple_choice", structured=True)
    [line] = [
        line
        for m in mc.generate.render(
            task="arc", examples=[{"question": "Q", "choices": ["a", "b"], "answer": "a"}]
        )
        for line in m["content"].splitlines()
        if line.startswith("{")
    ]
    GeneratedMultipleChoice.model_validate_json(line)


def test_a_json_prompt_cannot_have_a_reply_prefix(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "id: x\ndescription: d\ntemplate: t\noutput_format: json\nresponse_prefix: 'Q:'\n"
    )
    with pytest.raises(
        PromptError, match=r"(?s)p\.yaml is invalid: .*cannot have a response_prefix"
    ):
        load_prompt(path)


@pytest.mark.parametrize("api", ["openai", "vllm"])
def test_servers_are_sent_the_schema_in_their_own_field(api):
    pool = ServerPool(
        ServerPoolConfig(
            urls=["http://127.0.0.1:9"],
            model="m",
            max_concurrency_per_server=1,
            timeout_s=1,
            api=api,
        )
    )
    schema = response_schema(GeneratedMultipleChoice)
    body = pool._body("m", make_request("m", "v", SAMPLING, MESSAGES, json_schema=schema))
    if api == "openai":  # the OpenAI-standard field only
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "multiple_choice_item", "schema": schema},
        }
        assert "structured_outputs" not in body
    else:  # vLLM's own field, compact JSON as offline
        assert body["structured_outputs"] == {"json": schema, "disable_any_whitespace": True}
        assert "response_format" not in body
    plain = pool._body("m", make_request("m", "v", SAMPLING, MESSAGES))
    assert "response_format" not in plain and "structured_outputs" not in plain


def test_a_math_familys_final_answer_is_held_to_a_number():
    from mind_assets.task_qa.generation import item_model
    from mind_assets.task_qa.parsing import GeneratedNumericOpenEnded

    assert item_model(True, True) is GeneratedNumericOpenEnded
    assert item_model(True, False) is GeneratedOpenEnded
    assert item_model(False, True) is GeneratedMultipleChoice
    schema = response_schema(GeneratedNumericOpenEnded)
    assert list(schema["properties"]) == ["question", "solution", "final_answer"]
    assert "pattern" in schema["properties"]["final_answer"]
    reply = {"question": "Q?", "solution": "9 + 5 = 14", "final_answer": "14 apples"}
    item = parse_structured_item(json.dumps(reply), generation_task=True, numeric_answer=True)
    assert item.error.startswith("JSON does not match GeneratedNumericOpenEnded: final_answer")
    for number in ("14", "-3", "1,250", "2.5", "3/4"):
        reply["final_answer"] = number
        item = parse_structured_item(json.dumps(reply), generation_task=True, numeric_answer=True)
        assert (item.error, item.answer) == ("", number)
