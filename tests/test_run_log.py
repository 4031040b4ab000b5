"""gh_hf.training.run_log: a run started from a checkpoint logs the history of the state it holds."""

from __future__ import annotations

import json

from gh_hf.training.run_log import UNKNOWN_ROWS, continue_log, start_log

ROWS = [{"bank_momentum": 0.5, "step": 0}, {"loss": 3.0, "step": 4}, {"knn_accuracy": 0.5, "step": 8},
        {"epoch": 1, "anchor_occupancy": [5, 3], "step": 8}, {"loss": 2.0, "step": 9}]  # fmt: skip


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_resume_cuts_the_log_back_to_the_rows_its_checkpoint_saw(tmp_path):
    # Saved after the first 3 rows; the run then logged a refresh at the same step and step 9 before
    # the crash: both are redone after the resume, so they must go, or they appear twice.
    log, checkpoint = tmp_path / "run" / "log.jsonl", tmp_path / "run" / "checkpoints" / "step_00000008"
    _write(log, ROWS)
    assert continue_log(log, checkpoint, 8, rows=3) == 4
    assert _read(log) == [*ROWS[:3], {"resumed_from": str(checkpoint), "step": 8}]
    assert not list(log.parent.glob(".tmp-*"))  # written aside, then renamed


def test_a_checkpoint_older_than_the_row_count_keeps_the_whole_log_on_resume(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, ROWS)
    assert continue_log(log, tmp_path / "ckpt", 8, rows=UNKNOWN_ROWS) == len(ROWS) + 1
    assert _read(log)[:-1] == ROWS


def test_a_fork_starts_with_the_sources_rows_and_restarting_it_rewrites_them(tmp_path):
    source, run = tmp_path / "source", tmp_path / "run"
    _write(source / "log.jsonl", ROWS)
    run.mkdir()
    checkpoint = source / "checkpoints" / "warmup"
    marker = {"forked_from": str(checkpoint), "step": 8}
    assert continue_log(run / "log.jsonl", checkpoint, 8, rows=3, source=source) == 4
    assert _read(run / "log.jsonl") == [*ROWS[:3], marker]  # not the source's own GH-stage refresh
    with open(run / "log.jsonl", "a") as handle:  # the fork trains on, crashes, is started again
        handle.write(json.dumps({"loss": 1.0, "step": 10}) + "\n")
    continue_log(run / "log.jsonl", checkpoint, 8, rows=3, source=source)
    assert _read(run / "log.jsonl") == [*ROWS[:3], marker]


def test_a_fork_from_an_older_checkpoint_takes_the_source_rows_up_to_its_step(tmp_path):
    source, run = tmp_path / "source", tmp_path / "run"
    _write(source / "log.jsonl", ROWS)
    run.mkdir()
    checkpoint = source / "checkpoints" / "warmup"
    continue_log(run / "log.jsonl", checkpoint, 8, rows=UNKNOWN_ROWS, source=source)
    assert _read(run / "log.jsonl") == [*ROWS[:4], {"forked_from": str(checkpoint), "step": 8}]


def test_without_a_log_to_continue_the_log_starts_at_the_marker(tmp_path):
    run, source = tmp_path / "run", tmp_path / "source"
    run.mkdir()
    source.mkdir()
    assert continue_log(run / "log.jsonl", run / "ckpt", 5, rows=2) == 1  # a resume whose log was deleted
    assert _read(run / "log.jsonl") == [{"resumed_from": str(run / "ckpt"), "step": 5}]
    # a fork from a source folder without a log
    assert continue_log(run / "log.jsonl", source / "ckpt", 5, rows=2, source=source) == 1
    assert _read(run / "log.jsonl") == [{"forked_from": str(source / "ckpt"), "step": 5}]


def test_a_run_from_step_0_starts_a_new_log_and_keeps_the_old_aside(tmp_path):
    log = tmp_path / "log.jsonl"
    assert start_log(log) is None and not log.exists()
    _write(log, ROWS)  # an earlier start, killed before its first checkpoint
    assert start_log(log) == tmp_path / "log.1.jsonl" and not log.exists()
    _write(log, ROWS[:1])
    assert start_log(log) == tmp_path / "log.2.jsonl"
    assert _read(tmp_path / "log.1.jsonl") == ROWS and _read(tmp_path / "log.2.jsonl") == ROWS[:1]
