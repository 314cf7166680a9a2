"""The model wing's verifiers, registered with the gate (`shiptwo gate` imports this module).

- evidence `release`: the release directory a criterion recorded (hashed whole, referenced in place)
  is verified again (every file its manifest lists re-hashed; a missing, extra or altered file is a
  disagreement).
- recheck `humaneval`: K recorded HumanEval samples are regenerated greedily with the artifact whose
  SHA-256 the result recorded and re-scored in the sandbox; a different completion or outcome is a
  disagreement.
"""

from __future__ import annotations

from pathlib import Path

from shiptwo.harness.verifiers import RecheckRequest, register_evidence, register_recheck

EVIDENCE_RELEASE = "release"  # evidence key: a published release directory
EVIDENCE_ARTIFACT = "artifact"  # evidence key: the model artifact a sampled criterion measured
RECHECK_HUMANEVAL = "humaneval"


def verify_release(path: Path) -> list[str]:
    """Every problem `shiptwo verify` finds in the release directory `path`."""
    from shiptwo.formats.release import verify

    return verify(path)


def recheck_humaneval(request: RecheckRequest) -> list[str]:
    """Regenerate and re-score each chosen sample with the recorded artifact; one line per disagreement."""
    from shiptwo.checks.samples import recheck_humaneval as regenerate_and_rescore
    from shiptwo.harness.evidence import verify_file_record

    record = request.entry.get("evidence", {}).get(EVIDENCE_ARTIFACT)
    if not isinstance(record, dict) or "path" not in record:
        return [f"no {EVIDENCE_ARTIFACT!r} evidence recorded: cannot regenerate the samples"]
    problem = verify_file_record(EVIDENCE_ARTIFACT, record)
    if problem:
        return [problem]
    return regenerate_and_rescore(Path(record["path"]), request.samples)


RELEASE_CRITERIA = ("AC-SHIP1-010", "AC-SHIP2-012")  # their acceptance tests record the release they verified
register_evidence(EVIDENCE_RELEASE, verify_release, RELEASE_CRITERIA)
register_recheck(RECHECK_HUMANEVAL, recheck_humaneval)
