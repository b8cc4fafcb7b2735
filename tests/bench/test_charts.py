"""The charts draw from the stored results: valid PNGs of a fixed size, linked in the doc."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from bench import charts

ROOT = Path(__file__).resolve().parents[2]
# Results of a real run, kept with the tests: bench/results/ is not committed.
RESULTS = Path(__file__).with_name("data")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ("throughput.png", "latency.png", "cluster.png")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    # The first chunk is IHDR: length (4), type (4), then width and height, big-endian.
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    return width, height


def test_charts_from_stored_results(tmp_path: Path) -> None:
    out = tmp_path / "performance"
    drawn = charts.draw(RESULTS, out, None)
    assert [path.name for path in drawn] == list(NAMES)
    for name in NAMES:
        path = out / name
        assert path.is_file()
        assert png_size(path) == charts.SIZE_PX == (800, 450)


def test_main_writes_the_linked_section(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    shutil.copy(ROOT / "docs" / "performance.md", doc)
    argv = ["--results", str(RESULTS), "--out", str(tmp_path / "performance"), "--doc", str(doc)]
    assert charts.main(argv) == 0
    text = doc.read_text()
    assert text.count("## Charts") == 1
    for name in NAMES:
        assert f"](performance/{name})" in text
    # Running again replaces the section rather than appending a second one.
    assert charts.main(argv) == 0
    assert doc.read_text() == text


def test_missing_results_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(RESULTS / "full.json", tmp_path / "full.json")
    out = tmp_path / "performance"
    with pytest.raises(charts.ResultsError, match=r"not found: .*cluster\.json.*bench\.cluster"):
        charts.draw(tmp_path, out, None)
    assert not out.exists(), "nothing is drawn when a results file is missing"

    doc = tmp_path / "performance.md"
    argv = ["--results", str(tmp_path / "absent"), "--out", str(out), "--doc", str(doc)]
    assert charts.main(argv) == 2
    err = capsys.readouterr().err
    assert "benchmark results not found" in err
    assert "full.json" in err
    assert not doc.exists()


def test_results_lacking_a_figure_name_it(tmp_path: Path) -> None:
    (tmp_path / "full.json").write_text('{"meta": {"date": "x", "plan": {}}, "raw": {}}')
    shutil.copy(RESULTS / "cluster.json", tmp_path / "cluster.json")
    with pytest.raises(charts.ResultsError, match=r"no `raw\.node`"):
        charts.draw(tmp_path, tmp_path / "performance", None)
