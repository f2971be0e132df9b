"""The strict base every configuration model inherits: unknown keys are errors, not surprises."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
