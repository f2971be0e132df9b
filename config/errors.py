"""Configuration errors as a person reads them: file, line, key path, value, what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in one configuration source.

    ``file`` is None for settings that come from the environment or from keyword overrides;
    ``value`` is the offending value already rendered for display (None when there is none,
    e.g. for a missing key).
    """

    file: Path | None
    line: int | None
    key_path: str
    value: str | None
    message: str

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        subject = self.key_path
        if self.value is not None:
            subject = f"{subject} = {self.value}" if subject else self.value
        return f"{where}{subject}: {self.message}" if subject else f"{where}{self.message}"


class ConfigError(Exception):
    """One or more configuration problems, raised together so a person can fix them in one go."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        # the list (not the text) as the argument, so the error survives pickling between processes
        super().__init__(self.problems)

    def lines(self) -> list[str]:
        return [str(problem) for problem in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())
