"""``predict`` at scale (:mod:`ecg2age_dicom.bulk`): several decoding processes give the same
rows as one, memory is bounded by a window, rows are written as they come, and ``--resume``
skips what an earlier (killed) run wrote."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ecg2age_dicom import bulk
from ecg2age_dicom.model import load_card
from ecg2age_dicom.waveform import REQUIRED_LEADS
from tests.cli_runner import run
from tests.ecg_factory import make_ecg
from tests.peers import CLI, DEFAULT_CARD, ROOT, children_of, running, spawned_workers, wait_for

pytestmark = pytest.mark.usefixtures("in_repository")


@pytest.fixture
def folder(tmp_path) -> Path:
    """Twelve ECGs at three rates, one of them noise (refused) and one not DICOM."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(10):
        make_ecg(fs=(500, 1000, 250)[index % 3]).write(folder / f"{index:02d}.dcm")
    noise = np.random.default_rng(3).uniform(-60, 60, (5000, 12))
    make_ecg(signal=noise, leads=REQUIRED_LEADS).write(folder / "10-noise.dcm")
    (folder / "11-text.dcm").write_text("not DICOM")
    return folder


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_several_decoding_processes_give_the_rows_of_one_in_the_same_order(folder):
    code_one, one = run("predict", str(folder), "--format", "csv", "--jobs", "1")
    code_two, two = run("predict", str(folder), "--format", "csv", "--jobs", "2")
    assert code_one == code_two == 1  # two files cannot be scored
    assert rows_of(one) == rows_of(two)
    names = [Path(row["path"]).name for row in rows_of(two)]
    assert names == sorted(path.name for path in folder.iterdir())
    by_name = {Path(row["path"]).name: row for row in rows_of(two)}
    noise = by_name["10-noise.dcm"]
    assert noise["error"].startswith(("no QRS", "flat")) and not noise["predicted_age_years"]
    assert by_name["11-text.dcm"]["error"] and not by_name["11-text.dcm"]["predicted_age_years"]
    assert all(by_name[f"{i:02d}.dcm"]["predicted_age_years"] for i in range(10))


def test_files_are_prepared_ahead_from_the_start_within_the_window(folder):
    card = load_card(DEFAULT_CARD)
    pulled = []

    class Paths(list):
        def __iter__(self):
            for path in super().__iter__():
                pulled.append(path)
                yield path

    paths = Paths(sorted(folder.iterdir()) * 50)  # 600 files
    with bulk.PreparedFiles(paths, card, jobs=2, keep_scorable=False) as prepared:
        window = max(bulk.WINDOW_FILES, 2 * bulk.WINDOW_CHUNKS_PER_JOB * bulk.CHUNK_FILES)
        assert len(pulled) == window  # handed out on entering, before anyone asks
        items = iter(prepared)
        first = next(items)
        assert first.path.endswith("00.dcm") and first.model_input.shape == (5000, 12)
        assert first.scorable is None  # only the model input travels back without reports
        assert len(pulled) <= window + bulk.CHUNK_FILES
        assert [Path(item.path).name for item in itertools.islice(items, 11)] == [
            path.name for path in sorted(folder.iterdir())[1:]
        ]


def test_failed_files_do_not_hold_back_the_rows_written():
    items = [bulk.Prepared(f"{i}.dcm", None, error="bad") for i in range(10)]
    batches = list(bulk._batches(iter(items), size=4))
    assert [len(batch) for batch in batches] == [8, 2]


def test_json_lines_to_a_file_then_resume_skips_what_is_there_and_repairs_a_cut_line(
    folder, tmp_path
):
    output = tmp_path / "ages.jsonl"
    files = sorted(folder.iterdir())
    assert run("predict", *map(str, files[:4]), "--format", "json", "--output", str(output))[0] == 0
    written = output.read_text().splitlines()
    assert len(written) == 4
    # a kill while the fourth row was written leaves half a line
    output.write_text("\n".join(written[:3]) + "\n" + written[3][:40])
    code, _ = run("predict", str(folder), "--format", "json", "--output", str(output), "--resume")
    assert code == 1
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [Path(row["path"]).name for row in rows] == [path.name for path in files]
    again = run("predict", str(folder), "--format", "json", "--output", str(output), "--resume")
    assert again[0] == 0 and len(output.read_text().splitlines()) == len(files)


def test_csv_resume_appends_without_a_second_header(folder, tmp_path):
    output = tmp_path / "ages.csv"
    files = sorted(folder.iterdir())
    run("predict", *map(str, files[:5]), "--format", "csv", "--output", str(output))
    run("predict", str(folder), "--format", "csv", "--output", str(output), "--resume")
    rows = list(csv.DictReader(output.open()))
    assert [Path(row["path"]).name for row in rows] == [path.name for path in files]
    assert sum(line.startswith("path,") for line in output.read_text().splitlines()) == 1


def test_resume_needs_an_output_file(folder, capsys):
    assert run("predict", str(folder), "--resume", "--format", "csv")[0] == 1
    assert "--resume needs --output" in capsys.readouterr().err


SAID_ON_STOP = {  # exit status and the line that says what happened, by how predict stops
    "kill -9": (-signal.SIGKILL, None),
    "ctrl-c": (130, "interrupted after"),
    "a decoding process killed": (1, "ended abruptly (killed, or out of memory?)"),
}


@pytest.mark.parametrize("stop", SAID_ON_STOP)
def test_a_stop_in_the_middle_then_resume_scores_every_file_once(tmp_path, stop):
    folder = tmp_path / "many"
    folder.mkdir()
    make_ecg(fs=500).write(folder / "0000.dcm")
    data = (folder / "0000.dcm").read_bytes()
    # Several times the files prepared ahead (bulk.WINDOW_FILES), which are scored at the
    # model's pace once it has loaded: the rest still take seconds when the first rows come.
    for index in range(1, 1200):
        (folder / f"{index:04d}.dcm").write_bytes(data)
    output, log = tmp_path / "ages.csv", tmp_path / "stderr.txt"
    command = [str(CLI), "predict", str(folder), "--jobs", "2", "--format", "csv"]
    command += ["--output", str(output)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stderr=stderr, start_new_session=True)
    try:
        wait_for(lambda: output.exists() and output.read_text().count("\n") > 1, 120, "rows")
        children = children_of(process.pid)  # and multiprocessing's tracker
        decoders = spawned_workers(children)
        assert len(decoders) == 2
        if stop == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the group
        elif stop == "kill -9":
            process.kill()  # the main process alone
        else:
            os.kill(decoders[0], signal.SIGKILL)  # as the OOM killer would
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    status, line = SAID_ON_STOP[stop]
    said = log.read_text()
    assert process.returncode == status, said[-2000:]
    if line is not None:
        assert line in said and "--resume goes on" in said
        assert "Traceback" not in said
    complete = output.read_text().count("\n") - 1  # less the header; a cut row has no end
    assert 0 < complete < 1200
    wait_for(lambda: not any(map(running, children)), 30, "the decoding processes to end")
    resumed = subprocess.run(
        [*command, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{complete} files already in" in resumed.stderr
    paths = [row["path"] for row in csv.DictReader(output.open())]
    assert sorted(paths) == sorted(str(path) for path in folder.iterdir())
