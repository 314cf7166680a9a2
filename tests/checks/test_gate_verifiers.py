"""The gate's release verifier (registered by shiptwo.checks.gate_verifiers): a recorded release is verified
again when gating, so a release altered after the run refuses even when its recorded hash was forged to match."""

from __future__ import annotations

from pathlib import Path

from shiptwo.checks.gate_verifiers import EVIDENCE_RELEASE, RELEASE_CRITERIA, verify_release
from shiptwo.harness.evidence import describe_evidence, describe_path
from shiptwo.harness.rederive import evidence_disagreements
from shiptwo.harness.verifiers import registered

REPO = Path(__file__).resolve().parents[2]


def _release(tmp_path, tiny_checkpoint) -> Path:
    from shiptwo.formats.release import publish

    return publish([tiny_checkpoint], tmp_path / "release", REPO / "spec" / "ship-two.yaml", REPO).parent


def test_verifiers_are_registered_for_the_gate():
    assert EVIDENCE_RELEASE in registered()["evidence"] and "humaneval" in registered()["recheck"]


def test_an_intact_release_agrees(tmp_path, tiny_checkpoint):
    release = _release(tmp_path, tiny_checkpoint)
    entry = {"evidence": describe_evidence({EVIDENCE_RELEASE: release})}
    assert verify_release(release) == [] and evidence_disagreements(entry) == []


def test_a_release_altered_after_the_run_refuses_even_with_a_forged_hash(tmp_path, tiny_checkpoint):
    release = _release(tmp_path, tiny_checkpoint)
    entry = {"evidence": describe_evidence({EVIDENCE_RELEASE: release})}
    victim = next(p for p in release.iterdir() if p.suffix == ".safetensors")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    assert any("has SHA-256" in p for p in evidence_disagreements(entry))  # the recorded hash sees it
    entry["evidence"][EVIDENCE_RELEASE] = describe_path(release)  # ... so the forger re-hashes the record
    problems = evidence_disagreements(entry)
    assert problems and all(p.startswith(f"evidence '{EVIDENCE_RELEASE}': ") for p in problems)
    assert any(victim.name in p for p in problems), problems  # the manifest still names the original bytes


def test_a_release_record_without_its_hash_or_missing_altogether_refuses(tmp_path, tiny_checkpoint):
    """f05: deleting the record's sha256 (or the whole record) no longer skips the hash check and the verifier."""
    release = _release(tmp_path, tiny_checkpoint)
    entry = {"evidence": describe_evidence({EVIDENCE_RELEASE: release})}
    (release / "tampered.txt").write_text("x")
    del entry["evidence"][EVIDENCE_RELEASE]["sha256"]
    problems = evidence_disagreements(entry, "AC-SHIP1-010")
    assert any("recorded without its SHA-256" in p for p in problems), problems
    assert any("without its SHA-256" in p for p in evidence_disagreements({"samples": {"path": "s.jsonl"}}))
    for cid in RELEASE_CRITERIA:
        problems = evidence_disagreements({"evidence": {}}, cid)
        assert problems == [f"evidence 'release': required for {cid} (a verifier is registered for it), but not recorded"]
    assert evidence_disagreements({"evidence": {}}, "AC-SHIP1-001") == []
