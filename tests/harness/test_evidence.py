"""Evidence that survives its run: small files kept, large ones referenced by hash, re-verified, old runs pruned."""

from __future__ import annotations

import json
import re

import pytest

from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.harness import evidence
from shiptwo.harness.evidence import describe_evidence, new_run_id, prune_runs, verify_file_record


def test_small_files_are_kept_large_ones_referenced(tmp_path, monkeypatch):
    monkeypatch.setattr(evidence, "SMALL_EVIDENCE_BYTES", 10)
    keep = tmp_path / "evidence" / "run" / "AC-X-001"
    (tmp_path / "small.txt").write_text("tiny")
    (tmp_path / "large.bin").write_bytes(b"x" * 11)
    inside = tmp_path / "evidence" / "run" / "exports" / "m.gguf"  # already in this run's evidence: not copied
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"gguf")
    d = describe_evidence({"small": tmp_path / "small.txt", "large": str(tmp_path / "large.bin"), "inside": inside}, keep)
    assert d["small"]["path"] == str(keep / "small.txt") and d["small"]["copied_from"] == str(tmp_path / "small.txt")
    assert (keep / "small.txt").read_text() == "tiny"
    assert d["large"]["path"] == str(tmp_path / "large.bin") and d["large"]["bytes"] == 11 and "copied_from" not in d["large"]
    assert d["inside"]["path"] == str(inside) and "copied_from" not in d["inside"]
    (tmp_path / "small.txt").unlink()  # the original may go: the kept copy is the evidence
    assert verify_file_record("small", d["small"]) == ""


def test_a_second_file_of_the_same_name_does_not_overwrite_the_first(tmp_path):
    keep = tmp_path / "ev" / "run" / "AC-X-001"
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "report.json").write_text(sub)
    d = describe_evidence({"first": tmp_path / "a" / "report.json", "second": tmp_path / "b" / "report.json"}, keep)
    assert (keep / "report.json").read_text() == "a" and (keep / "second-report.json").read_text() == "b"
    assert d["second"]["path"] == str(keep / "second-report.json")


def test_verify_file_record_sees_deletion_alteration_and_directory_changes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"1")
    (tmp_path / "f.txt").write_text("a")
    rec = describe_evidence({"d": tmp_path / "d", "f": tmp_path / "f.txt", "gone": tmp_path / "never"})
    assert verify_file_record("d", rec["d"]) == "" and verify_file_record("f", rec["f"]) == ""
    assert "did not exist when recorded" in verify_file_record("gone", rec["gone"])
    (tmp_path / "d" / "extra.bin").write_bytes(b"2")
    assert "has SHA-256" in verify_file_record("d", rec["d"])
    (tmp_path / "f.txt").unlink()
    assert "no longer exists" in verify_file_record("f", rec["f"])


def test_run_ids_sort_by_time_and_are_unique():
    ids = [new_run_id() for _ in range(20)]
    assert len(set(ids)) == 20 and all(i[8] == "T" and i.endswith(i[-6:]) for i in ids)


def test_prune_keeps_the_newest_and_every_run_in_use(tmp_path):
    for name in ("20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260103T000000Z-cccccc", "20260104T000000Z-dddddd"):
        (tmp_path / name / "AC-X-001").mkdir(parents=True)
    removed = prune_runs(tmp_path, keep=1, in_use={"20260101T000000Z-aaaaaa"})
    assert sorted(p.name for p in removed) == ["20260102T000000Z-bbbbbb", "20260103T000000Z-cccccc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260101T000000Z-aaaaaa", "20260104T000000Z-dddddd"]
    with pytest.raises(ShiptwoError, match="--keep must be >= 0"):
        prune_runs(tmp_path, keep=-1, in_use=set())


def test_cli_prune_never_removes_what_results_json_points_at(tmp_path, capsys):
    root = tmp_path / "evidence"
    for name in ("20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260103T000000Z-cccccc"):
        (root / name).mkdir(parents=True)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"run": {"commit": "c", "spec_sha256": "s", "profile": "default", "time": "t",
                                           "run_id": "20260103T000000Z-cccccc"},
                                   "criteria": {"AC-X-001": {"outcome": "PASS", "profile": "default", "commit": "c", "time": "t",
                                                             "run_id": "20260101T000000Z-aaaaaa"}}}))
    assert main(["evidence", "prune", "--keep", "0", "--root", str(root), "--results", str(results)]) == 0
    assert "removed 1 run(s)" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["20260101T000000Z-aaaaaa", "20260103T000000Z-cccccc"]


@pytest.mark.parametrize("value, says", [
    (f"1{'0' * 400}", "value must be a finite number"),  # an integer too large for a float
    ("9" * 5000, "malformed JSON: Exceeds the limit (4300 digits)"),  # past Python's digit limit
])
def test_a_sample_value_no_float_holds_is_a_one_line_error(tmp_path, value, says):
    from shiptwo.harness.evidence import read_samples

    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "a", "prompt_sha256": "0", "output": "x", "value": ' + value + '}\n')
    with pytest.raises(ShiptwoError, match=re.escape(says)) as err:
        read_samples(path)
    assert str(err.value).startswith(f"{path}:1: ") and "\n" not in str(err.value)
