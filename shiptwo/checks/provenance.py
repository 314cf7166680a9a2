"""Acceptance metric on shipped formats: license, data source and data license present in every
part of every format, each equal to the declared value (AC-SHIP2-012, AC-SHIP1-009)."""

from __future__ import annotations

from shiptwo.errors import ShiptwoError
from shiptwo.formats.release import provenance_by_part
from shiptwo.model.checkpoint import PROVENANCE_KEYS


def provenance_defects(paths, declared: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """({part: [defects]}, {part: fields checked}) over every part of every artifact; the defects are
    empty when all is as declared, and the second mapping is what a count of them was taken over.

    A field is a defect when missing, or when its value differs from `declared[field]`; a field
    with no declared value must at least hold one value across all parts (the first part seen
    sets it), so a format that rewrites it is still caught.
    """
    unknown = sorted(set(declared) - set(PROVENANCE_KEYS))
    if unknown:
        raise ShiptwoError(f"declared provenance has unknown field(s) {', '.join(unknown)}")
    out: dict[str, list[str]] = {}
    checked: dict[str, int] = {}
    agreed = dict(declared)
    for path in paths:
        for part, prov in provenance_by_part(path).items():
            checked[part] = len(PROVENANCE_KEYS)
            defects = []
            for key in PROVENANCE_KEYS:
                if key not in prov:
                    defects.append(f"{key} missing")
                    continue
                want = agreed.setdefault(key, prov[key])
                if prov[key] != want:
                    source = "declared" if key in declared else "recorded in the first format"
                    defects.append(f"{key} is {prov[key]!r}, {source} {want!r}")
            if defects:
                out[part] = defects
    return out, checked



def model2_declared_provenance(profile: str, license: str) -> dict[str, str]:
    """What MODEL-2 declares: `license` (the spec's) and the data source and license of its recipe's
    corpus, re-derived from the corpus (never read from a build record)."""
    from shiptwo.data.corpus import load_corpus
    from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE
    from shiptwo.training.recipes import load_recipe

    corpus = load_corpus(load_recipe("model2", profile).corpus)
    return {META_LICENSE: license, META_DATA_SOURCE: corpus.data_source, META_DATA_LICENSE: corpus.data_license}


def model1_declared_provenance(recipe, license: str) -> dict[str, str]:
    """What MODEL-1's recipe declares, derived from the declarations (never from a build record):
    `license` (the spec's); for a packaged base its declared data source and data license, for
    MODEL-2 as base MODEL-2's (model2_declared_provenance), the data source followed by the
    instruction-pair corpus when the recipe tunes. A path base declares nothing beyond the license:
    its other fields are held to agree across formats only."""
    from shiptwo.builds.model1 import packaged_provenance, tuned_data_source
    from shiptwo.data.corpus import load_corpus
    from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE
    from shiptwo.training.recipes import BASE_MODEL2, PackagedBase

    declared = {META_LICENSE: license}
    if isinstance(recipe.base, PackagedBase):
        declared.update({META_DATA_SOURCE: packaged_provenance(recipe.base)[META_DATA_SOURCE],
                         META_DATA_LICENSE: recipe.base.data_license})
    elif recipe.base == BASE_MODEL2:
        declared = model2_declared_provenance(recipe.profile, license)
    if recipe.sft is not None and META_DATA_SOURCE in declared:
        declared[META_DATA_SOURCE] = tuned_data_source(declared[META_DATA_SOURCE], load_corpus(recipe.sft.corpus).data_source)
    return declared
