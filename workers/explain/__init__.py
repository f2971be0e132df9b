"""The explainer stage: a vision-language model's verdict on flagged frames, one per defect episode."""
