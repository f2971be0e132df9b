"""Loads station YAML files into StationConfig, reporting every problem with its file and line."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from config.errors import ConfigError, ConfigProblem
from config.messages import describe, show, show_value, without_typo_echoes
from config.station import StationConfig, looks_like_url, normalize_source
from config.yaml_tree import YamlDocument, parse

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
STATION_SUFFIXES = (".yaml", ".yml")
# first bytes of the formats above: a ".png" that is really a Git LFS pointer must not pass
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")


@dataclass
class _Loaded:
    """The outcome of reading one file: a station when it is valid, and what is wrong otherwise."""

    path: Path
    station: StationConfig | None = None
    document: YamlDocument | None = None
    problems: list[ConfigProblem] = field(default_factory=list)

    def problem(self, message: str, key_path: str = "", value: str | None = None) -> None:
        line = None
        if self.document is not None and key_path:
            _, line = self.document.locate(key_path.split("."))
        self.problems.append(ConfigProblem(self.path, line, key_path, value, message))


def load_station(path: Path) -> StationConfig:
    """Read, validate and resolve one station file; raises ConfigError listing every problem."""
    loaded = _read_station(Path(path))
    if loaded.problems or loaded.station is None:
        raise ConfigError(loaded.problems)
    return loaded.station


def load_stations(paths: Iterable[Path]) -> list[StationConfig]:
    """Load station files and folders of them; problems from all files are raised together."""
    problems: list[ConfigProblem] = []
    loaded: list[_Loaded] = []
    for entry in _station_files([Path(p) for p in paths]):
        if isinstance(entry, ConfigProblem):
            problems.append(entry)
        else:
            loaded.append(_read_station(entry))
            problems.extend(loaded[-1].problems)
    problems.extend(_duplicate_ids(loaded))
    if problems:
        raise ConfigError(problems)
    return [one.station for one in loaded if one.station is not None]


def validate_files(paths: list[Path]) -> list[str]:
    """The problems in the given station files and folders, one line each; empty when valid."""
    try:
        load_stations(paths)
    except ConfigError as e:
        return e.lines()
    return []


def _station_files(paths: list[Path]) -> list[Path | ConfigProblem]:
    """Expand folders into their YAML files (sorted), keeping the order the paths were given.

    A file named twice is read once; a path that yields no file becomes a problem in its place.
    """
    entries: list[Path | ConfigProblem] = []
    seen: set[Path] = set()
    if not paths:
        entries.append(ConfigProblem(None, None, "", None, "no station files given"))
    for path in paths:
        if path.is_dir():
            found = sorted(
                child
                for child in path.iterdir()
                if child.suffix.lower() in STATION_SUFFIXES
                and child.is_file()
                and not child.name.startswith(".")  # editor lock and swap files
            )
            if not found:
                entries.append(ConfigProblem(path, None, "", None, "folder has no .yaml or .yml files"))
        elif path.exists():
            found = [path]
        else:
            found = []
            entries.append(ConfigProblem(path, None, "", None, "no such file or folder"))
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                entries.append(file)
    return entries


def _read_station(path: Path) -> _Loaded:
    loaded = _Loaded(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        loaded.problem(f"cannot read file: {e.strerror or e}")
        return loaded
    try:
        loaded.document = parse(text)
    except yaml.YAMLError as e:
        loaded.problems.append(_syntax_problem(path, e))
        return loaded
    if not _check_shape(loaded, loaded.document):
        return loaded
    for key_path, line, first in loaded.document.duplicate_keys():
        loaded.problems.append(
            ConfigProblem(path, line, key_path, None, f"key given twice (first at line {first})")
        )
    station: StationConfig | None = None
    try:
        station = StationConfig.model_validate(loaded.document.data)
    except ValidationError as e:
        loaded.problems.extend(_validation_problems(path, loaded.document, e))
    base = path.absolute().parent
    # checked even when other keys are wrong, so one `validate` run shows everything
    _check_files(loaded, loaded.document.data, base)
    if station is not None and not loaded.problems:
        loaded.station = _resolve_paths(station, base)
    loaded.problems.sort(key=lambda problem: problem.line or 0)  # read top to bottom
    return loaded


def _syntax_problem(path: Path, error: yaml.YAMLError) -> ConfigProblem:
    if not isinstance(error, yaml.MarkedYAMLError):
        # e.g. ReaderError for bytes that are not UTF-8/UTF-16 text: it carries no line
        return ConfigProblem(path, None, "", None, f"not a readable YAML file: {error}")
    mark = error.problem_mark or error.context_mark
    message = f"YAML syntax error: {error.problem or 'invalid YAML'}"
    if error.context and error.context_mark is not None:
        message += f" ({error.context} at line {error.context_mark.line + 1})"
    return ConfigProblem(path, mark.line + 1 if mark else None, "", None, message)


def _check_shape(loaded: _Loaded, document: YamlDocument) -> bool:
    """Whether the file holds a mapping at the top; otherwise record why not."""
    if document.root is None or document.data is None:
        loaded.problem("file is empty; expected a station mapping with id, camera, product, ...")
        return False
    if not isinstance(document.data, dict):
        kind = "a list" if isinstance(document.data, list) else f"the value {show(document.data)}"
        loaded.problems.append(
            ConfigProblem(
                loaded.path,
                document.root.start_mark.line + 1,
                "",
                None,
                f"top level must be a mapping of keys (id, camera, product, ...), not {kind}",
            )
        )
        return False
    return True


def _validation_problems(path: Path, document: YamlDocument, error: ValidationError) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for detail in without_typo_echoes(error.errors(include_url=False)):
        key_path, line = document.locate(detail["loc"], missing=detail["type"] == "missing")
        problem = ConfigProblem(path, line, key_path, show_value(detail), describe(detail, StationConfig))
        if problem not in problems:
            problems.append(problem)
    return problems


def _absolute(path: Path, base: Path) -> Path:
    """``path`` relative to ``base`` (the YAML file's folder), normalised, with ~ expanded."""
    return Path(os.path.normpath(base / path.expanduser()))


def _resolve_paths(station: StationConfig, base: Path) -> StationConfig:
    # relative paths mean "next to this YAML file", whatever the working directory of the process
    references = station.references
    if references is not None:
        references = references.model_copy(update={"folder": _absolute(references.folder, base)})
    model = station.model
    if model.decoder is not None:
        model = model.model_copy(update={"decoder": _absolute(model.decoder, base)})
    camera = station.camera
    if isinstance(camera.source, str) and not looks_like_url(camera.source):
        camera = camera.model_copy(update={"source": str(_absolute(Path(camera.source), base))})
    return station.model_copy(update={"references": references, "camera": camera, "model": model})


def _check_files(loaded: _Loaded, raw: object, base: Path) -> None:
    """Start-up checks that need the file system: better now than when the worker starts.

    Works on the raw values, skipping keys whose schema check already failed.
    """
    flagged = {problem.key_path for problem in loaded.problems}
    folder = _raw_value(raw, "references", "folder")
    if isinstance(folder, str) and folder.strip() and "references.folder" not in flagged:
        message = _references_problem(_absolute(Path(folder), base))
        if message:
            loaded.problem(message, "references.folder", show(folder))
    decoder = _raw_value(raw, "model", "decoder")
    if isinstance(decoder, str) and decoder.strip() and "model.decoder" not in flagged:
        path = _absolute(Path(decoder), base)
        if not path.is_file():
            loaded.problem(f"decoder file not found: {path}", "model.decoder", show(decoder))
    raw_source = _raw_value(raw, "camera", "source")
    if "camera.source" in flagged or raw_source is None:
        return
    try:
        source = normalize_source(raw_source)
    except ValueError:
        return  # reported by the schema check when the camera section is validated
    if isinstance(source, str) and not looks_like_url(source):
        message = _source_problem(str(_absolute(Path(source), base)))
        if message:
            loaded.problem(message, "camera.source", show(raw_source))


def _raw_value(raw: object, section: str, key: str) -> object:
    part = raw.get(section) if isinstance(raw, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def _references_problem(folder: Path) -> str | None:
    if not folder.exists():
        return f"folder not found: {folder}"
    if not folder.is_dir():
        return f"not a folder: {folder}"
    try:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as e:
        return f"cannot list folder {folder}: {e.strerror or e}"
    if not images:
        kinds = ", ".join(IMAGE_SUFFIXES)
        return f"no reference images in {folder} (expected normal images: {kinds})"
    if not any(_is_image(p) for p in images):
        return (
            f"none of the {len(images)} image files in {folder} can be read as an image "
            "(unreadable, damaged, or Git LFS pointers?)"
        )
    return None


def _is_image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head.startswith(_IMAGE_SIGNATURES)


def _source_problem(source: str) -> str | None:
    if any(char in source for char in "*?["):
        if not any(os.path.isfile(p) for p in glob.iglob(source, recursive=True)):
            return f"no files match {source}"
        return None
    if not os.path.exists(source):
        return f"file or folder not found: {source}"
    return None


def _duplicate_ids(loaded: list[_Loaded]) -> list[ConfigProblem]:
    """Station ids key the Redis streams and the store: two files with one id would mix data."""
    problems: list[ConfigProblem] = []
    first: dict[str, tuple[Path, int | None]] = {}
    for one in loaded:
        if one.station is None or one.document is None:
            continue
        _, line = one.document.locate(["id"])
        station_id = one.station.id
        if station_id in first:
            where, where_line = first[station_id]
            problems.append(
                ConfigProblem(
                    one.path,
                    line,
                    "id",
                    show(station_id),
                    f"duplicate station id; also used in {where}:{where_line}",
                )
            )
        else:
            first[station_id] = (one.path, line)
    return problems
