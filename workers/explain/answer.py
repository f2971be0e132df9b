"""The answer the explainer asks for, and how a model's text is checked against it."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class Answer(BaseModel):
    """The validated JSON verdict: AnomalyGPT's yes/no plus where and what, in words."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # extra keys are harmless chatter

    anomaly: bool = Field(description="Is there any anomaly in the image?")
    location: str = Field(max_length=500, description="Where the anomaly is, in words")
    defect_type: str = Field(max_length=200, description="What kind of defect it is")
    description: str = Field(max_length=2000, description="One or two sentences on what is seen")
    confidence: float = Field(ge=0.0, le=1.0, description="The model's own confidence, 0 to 1")


class AnswerError(ValueError):
    """Model output that is not the requested JSON; the message is fed back to the model once."""


def parse_answer(text: str) -> Answer:
    """The Answer in ``text``: bare JSON, JSON in a code fence, or the outermost {...} in prose.

    Raises AnswerError saying what is wrong, phrased so that the model can fix it on a retry.
    """
    candidate = _json_part(text)
    if candidate is None:
        raise AnswerError("the reply contains no JSON object")
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as e:
        raise AnswerError(f"the JSON is not valid: {e.msg} at character {e.pos}") from e
    if not isinstance(data, dict):
        raise AnswerError("the JSON must be an object with the keys " + ", ".join(Answer.model_fields))
    try:
        return Answer.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'object'}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
        raise AnswerError(f"the JSON does not match the schema: {problems}") from e


def _json_part(text: str) -> str | None:
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    return text[start : end + 1]
