"""Station files: broken ones are reported by file, line, key path and value; valid ones load."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_station, load_stations, validate_files
from config.yaml_tree import parse
from tests.config.conftest import PNG_BYTES, VALID_STATION, StationWriter

# (old text in VALID_STATION, replacement, the problem line expected; {file} is the YAML path)
BROKEN_EDITS = [
    pytest.param(
        "fps: 5",
        "fps: 500",
        "{file}:5: camera.fps = 500: must be at most 120 (Frames per",
        id="fps-too-high",
    ),
    pytest.param("fps: 5", "fps: 0", "{file}:5: camera.fps = 0: must be more than 0", id="fps-0"),
    pytest.param("fps: 5", "fps: fast", '{file}:5: camera.fps = "fast": must be a number', id="fps-text"),
    pytest.param("fps: 5", "fps: yes", "{file}:5: camera.fps = true: must be a number", id="fps-yaml-bool"),
    pytest.param("k: 2", "k: two", '{file}:10: references.k = "two": must be a whole number', id="k-text"),
    pytest.param("k: 2", "k: 2.5", "{file}:10: references.k = 2.5: must be a whole", id="k-float"),
    pytest.param(
        "fps: 5",
        "fsp: 5",
        "{file}:5: camera.fsp = 5: unknown key; did you mean 'fps'?",
        id="typo-key",
    ),
    pytest.param(
        "references:",
        "refrences:",
        "{file}:8: refrences: unknown key; did you mean 'references'",
        id="typo-section",
    ),
    pytest.param(
        "  source: 0\n",
        "",
        "{file}:3: camera.source: required key is missing (USB device",
        id="missing-nested",
    ),
    pytest.param(
        "product:\n  name: bottle\n",
        "",
        "{file}:1: product: required key is missing",
        id="missing-section",
    ),
    pytest.param(
        "camera:\n  source: 0\n  fps: 5\n",
        "camera: 0\n",
        "{file}:3: camera = 0: must be a mapping with keys: source, loop, fps",
        id="section-scalar",
    ),
    pytest.param(
        "source: 0",
        "source: rtsp//cam",
        '{file}:4: camera.source = "rtsp//cam": not a valid camera URL',
        id="url-no-colon",
    ),
    pytest.param(
        "source: 0",
        "source: ftp://x",
        '{file}:4: camera.source = "ftp://x": not a valid camera',
        id="url-ftp",
    ),
    pytest.param(
        "source: 0",
        "source: rtsp://",
        '{file}:4: camera.source = "rtsp://": not a valid camera',
        id="url-no-host",
    ),
    pytest.param(
        "source: 0",
        "source: -1",
        "{file}:4: camera.source = -1: a device index must be 0 or",
        id="device-negative",
    ),
    pytest.param(
        "source: 0",
        "source: 1.5",
        "{file}:4: camera.source = 1.5: must be a device index",
        id="device-float",
    ),
    pytest.param(
        "source: 0",
        "source: clips/none.mp4",
        '{file}:4: camera.source = "clips/none.mp4": file or folder not found: ',
        id="video-missing",
    ),
    pytest.param(
        "source: 0",
        'source: "frames/*.png"',
        '{file}:4: camera.source = "frames/*.png": no files match ',
        id="glob-no-match",
    ),
    pytest.param(
        "folder: refs",
        "folder: nowhere",
        '{file}:9: references.folder = "nowhere": folder not found: ',
        id="refs-missing",
    ),
    pytest.param(
        "folder: refs",
        "folder: empty",
        '{file}:9: references.folder = "empty": no reference images in ',
        id="refs-empty",
    ),
    pytest.param(
        "folder: refs",
        "folder: refs/good-000.png",
        '{file}:9: references.folder = "refs/good-000.png": not a folder',
        id="refs-is-file",
    ),
    pytest.param(
        "id: line-1",
        "id: Line 1",
        '{file}:1: id = "Line 1": has the wrong format (Station id',
        id="id-uppercase-space",
    ),
    pytest.param(
        "id: line-1",
        "id: line one",
        '{file}:1: id = "line one": has the wrong format',
        id="id-space",
    ),
    pytest.param(
        "  name: bottle",
        "  name: no",
        "{file}:7: product.name = false: must be text (quote it",
        id="norway-problem",
    ),
    pytest.param(
        "  name: bottle",
        '  name: ""',
        '{file}:7: product.name = "": must be at least 1',
        id="name-empty",
    ),
    pytest.param(
        "fps: 5",
        "fps: 5\n  fps: 6",
        "{file}:6: camera.fps: key given twice (first at line 5)",
        id="yaml-duplicate-key",
    ),
    pytest.param(
        "k: 2",
        "k: 2\n  mode: zero-shot",
        '{file}:11: references.mode = "zero-shot": unknown key',
        id="key-in-wrong-section",
    ),
    pytest.param(
        "product:",
        "model:\n  mode: zero-shot\nproduct:",
        "{file}:6: model: mode 'zero-shot' needs an open_clip: backbone",
        id="zero-shot-packaged",
    ),
    pytest.param(
        "  fps: 5",
        "\tfps: 5",
        "{file}:5: YAML syntax error: found character '\\t' that cannot start any token",
        id="yaml-tab",
    ),
    pytest.param(
        "fps: 5",
        "fps: 5: 6",
        "{file}:5: YAML syntax error: mapping values are not allowed",
        id="yaml-colon",
    ),
    pytest.param(
        "  name: bottle\n",
        '  name: "bottle\n',
        "{file}:11: YAML syntax error: found unexpected end of stream (while scanning a quoted "
        "scalar at line 7)",
        id="yaml-unclosed-quote",
    ),
]


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_station(path)
    return caught.value.lines()


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN_EDITS)
def test_broken_station_names_file_line_key_and_value(
    write_station: StationWriter, old: str, new: str, expected: str
) -> None:
    assert old in VALID_STATION
    path = write_station(VALID_STATION.replace(old, new, 1))
    problems = _problems(path)
    assert len(problems) == 1, problems  # one mistake, one message: no pydantic noise
    assert problems[0].startswith(expected.replace("{file}", str(path))), problems[0]
    assert "Traceback" not in problems[0] and "pydantic" not in problems[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "{file}: file is empty", id="empty"),
        pytest.param("# only a comment\n", "{file}: file is empty", id="comments-only"),
        pytest.param("- id: a\n- id: b\n", "{file}:1: top level must be a mapping", id="list"),
        pytest.param("\n\njust text\n", "{file}:3: top level must be a mapping", id="scalar"),
        pytest.param("id: !!python/name:os.system x\n", "{file}:1: YAML syntax error", id="tag"),
    ],
)
def test_file_that_is_not_a_station_mapping(write_station: StationWriter, text: str, expected: str) -> None:
    path = write_station(text)
    problems = _problems(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected.replace("{file}", str(path))), problems[0]


def test_unreadable_and_non_text_files(station_dir: Path) -> None:
    # a folder where a file is expected cannot be read (chmod tricks fail when tests run as root)
    assert _problems(station_dir / "refs") == [f"{station_dir / 'refs'}: cannot read file: Is a directory"]
    binary = station_dir / "binary.yaml"
    binary.write_bytes(b"id: \x80\x81\x82\n")
    (problem,) = _problems(binary)
    assert problem.startswith(f"{binary}: not a readable YAML file")


def test_references_that_are_git_lfs_pointers_are_rejected(
    station_dir: Path, write_station: StationWriter
) -> None:
    (station_dir / "lfs").mkdir()
    (station_dir / "lfs" / "good.png").write_text("version https://git-lfs.github.com/spec/v1\n")
    path = write_station(VALID_STATION.replace("folder: refs", "folder: lfs"))
    (problem,) = _problems(path)
    assert problem.startswith(f'{path}:9: references.folder = "lfs": none of the 1 image files')


def test_every_problem_in_a_file_is_reported_in_line_order(write_station: StationWriter) -> None:
    text = VALID_STATION.replace("id: line-1", "id: Bad").replace("fps: 5", "fps: 0")
    text = text.replace("folder: refs", "folder: nowhere").replace("k: 2", "k: 0")
    path = write_station(text)
    problems = _problems(path)
    # the folder check runs although the schema check failed: one run shows everything
    assert [line.split(":")[1] for line in problems] == ["1", "5", "9", "10"]
    assert "folder not found" in problems[2]


def test_valid_station_resolves_paths_relative_to_its_file(
    station_dir: Path, write_station: StationWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (station_dir / "frames").mkdir()
    (station_dir / "frames" / "f-000.png").write_bytes(PNG_BYTES)
    path = write_station(VALID_STATION.replace("source: 0", "source: frames/*.png"))
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    station = load_station(Path("stations") / path.name)
    assert station.id == "line-1"
    assert station.references.folder == station_dir / "refs"
    assert station.references.folder.is_absolute()
    assert station.camera.source == str(station_dir / "frames" / "*.png")
    assert station.camera.fps == 5.0
    assert station.model.backbone == "packaged:efficientnet-lite0"  # default applied


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("0", 0),
        ("'2'", 2),
        ("rtsp://user:pw@10.0.0.7:554/stream", "rtsp://user:pw@10.0.0.7:554/stream"),
        ("https://cam.local/mjpeg", "https://cam.local/mjpeg"),
    ],
)
def test_device_and_url_sources_are_kept(
    write_station: StationWriter, source: str, expected: int | str
) -> None:
    station = load_station(write_station(VALID_STATION.replace("source: 0", f"source: {source}")))
    assert station.camera.source == expected


def test_folders_expand_to_their_yaml_files_sorted(station_dir: Path, write_station: StationWriter) -> None:
    write_station(VALID_STATION.replace("line-1", "b-line"), name="b.yml")
    write_station(VALID_STATION.replace("line-1", "a-line"), name="a.yaml")
    (station_dir / "notes.txt").write_text("not a station")
    (station_dir / ".#a.yaml").write_text("editor lock file")
    stations = load_stations([station_dir, station_dir / "a.yaml"])  # a.yaml named twice
    assert [s.id for s in stations] == ["a-line", "b-line"]


def test_duplicate_station_ids_across_files_name_both(write_station: StationWriter) -> None:
    first = write_station(name="a.yaml")
    second = write_station("# the same station, copied\n" + VALID_STATION, name="b.yaml")
    with pytest.raises(ConfigError) as caught:
        load_stations([first, second])
    assert caught.value.lines() == [
        f'{second}:2: id = "line-1": duplicate station id; also used in {first}:1'
    ]


def test_problems_of_all_files_are_raised_together(station_dir: Path, write_station: StationWriter) -> None:
    bad_fps = write_station(VALID_STATION.replace("fps: 5", "fps: 500"), name="a.yaml")
    empty = write_station("", name="b.yaml")
    lines = validate_files([bad_fps, empty, station_dir / "missing.yaml"])
    assert [line.split(":")[0] for line in lines] == [
        str(bad_fps),
        str(empty),
        str(station_dir / "missing.yaml"),
    ]
    assert lines[2].endswith("no such file or folder")


def test_validate_files_is_empty_for_valid_files_and_reports_empty_folders(
    station_dir: Path, write_station: StationWriter
) -> None:
    assert validate_files([write_station()]) == []
    assert validate_files([station_dir / "empty"]) == [
        f"{station_dir / 'empty'}: folder has no .yaml or .yml files"
    ]
    assert validate_files([]) == ["no station files given"]


def test_demo_station_loads_once_its_folders_are_generated(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "config" / "stations" / "demo.yaml"
    copy = tmp_path / "demo.yaml"
    shutil.copy(demo, copy)
    with pytest.raises(ConfigError) as caught:
        load_station(copy)
    # before `linewatch demo` generates them, only the two generated folders are missing
    assert [p.key_path for p in caught.value.problems] == ["camera.source", "references.folder"]
    for folder in ("demo-references", "demo-frames"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "000.png").write_bytes(PNG_BYTES)
    station = load_station(copy)
    assert station.product.name == "magnetic tile"
    assert station.references.folder == tmp_path / "demo-references"


def test_config_error_survives_pickling(write_station: StationWriter) -> None:
    with pytest.raises(ConfigError) as caught:
        load_station(write_station(""))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.problems == caught.value.problems
    assert str(copy) == str(caught.value)


def test_locate_handles_list_indices_and_merge_keys() -> None:
    document = parse("base: &base\n  fps: 5\ncams:\n  - <<: *base\n    source: 0\n  - fps: 7\n")
    assert document.locate(["cams", 1, "fps"]) == ("cams[1].fps", 6)
    assert document.locate(["cams", 0, "fps"]) == ("cams[0].fps", 2)  # where the value is written
    assert document.locate(["cams", 0, "loop"], missing=True) == ("cams[0].loop", 4)
    assert document.locate(["cams", 0, "source", "int"]) == ("cams[0].source", 5)
