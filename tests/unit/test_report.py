"""`cnnlab report` given no sweep directory: one-line errors, exit code 2."""

import pytest
from helpers import one_error_line

from cnnlab.cli import main


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing"], "missing does not exist; give a sweep directory"),
        (["file.txt"], "file.txt is a file"),
        (["empty"], "no cnnlab runs (metrics.json) under empty"),
        ([], "the following arguments are required: directory; usage: cnnlab report <directory>"),
        (["empty", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_directory_is_one_line_and_exit_2(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "empty").mkdir()
    assert main(["report", *args]) == 2
    captured = capsys.readouterr()
    assert expected in one_error_line(captured.err)
    assert captured.err.startswith("cnnlab report: error: ")
    assert not (tmp_path / "empty" / "report.csv").exists()
