"""Errors raised by the model side, each naming what was wrong and how to fix it."""


class WorkerError(Exception):
    """Base class of linewatch model-side errors."""


class BackboneSpecError(WorkerError, ValueError):
    """A backbone spec string that cannot be parsed or names an unknown kind."""


class WeightsNotFoundError(WorkerError, FileNotFoundError):
    """Model weights are absent locally and cannot be fetched; the message says how to provide them."""


class ReferenceImagesError(WorkerError, ValueError):
    """Reference images for a memory bank are missing, unreadable or too few."""


class DatasetError(WorkerError, ValueError):
    """An evaluation dataset is not in the expected (MVTec-AD) layout."""


class DecoderError(WorkerError, ValueError):
    """A zero-shot decoder checkpoint that is missing, unreadable or made for another backbone."""
