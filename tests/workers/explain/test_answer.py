"""Model output → validated Answer, or an error the model can act on."""

from __future__ import annotations

import pytest

from workers.explain.answer import AnswerError, parse_answer

GOOD = (
    '{"anomaly": true, "location": "top left", "defect_type": "crack", "description": "d", "confidence": 0.7}'
)


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        f"```json\n{GOOD}\n```",
        f"Sure! Here is my verdict:\n{GOOD}\nHope this helps.",
        GOOD.replace("}", ', "extra": "ignored"}'),
    ],
)
def test_answers_in_the_usual_wrappings_parse(text: str) -> None:
    answer = parse_answer(text)
    assert (answer.anomaly, answer.location, answer.defect_type, answer.confidence) == (
        True,
        "top left",
        "crack",
        0.7,
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Yes, there is an anomaly at the top left.", "no JSON object"),
        ('{"anomaly": true, "location": "top left",}', "not valid"),
        ('{"anomaly": true, "location": "x", "defect_type": "y", "description": "z"}', "confidence"),
        (GOOD.replace("0.7", "1.7"), "confidence"),
        (GOOD.replace("true", '"perhaps"'), "anomaly"),
        ("[1, 2]", "no JSON object"),
    ],
)
def test_bad_answers_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(AnswerError, match=says):
        parse_answer(text)
