"""`shiptwo export`, `import`, `publish`, `verify`: the release formats."""

from __future__ import annotations

import sys

from shiptwo.errors import ShiptwoError

from shiptwo.formats.gguf_export import GGUF_DTYPES
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE


EXPORT_FORMATS = ("hf", "gguf")


# --- release formats: export, import, publish, verify (hf_io / gguf_export / release) -----


def _add_export(sub) -> None:

    p = sub.add_parser("export", help="export a native checkpoint as a Hugging Face directory or a GGUF file")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--dtype", choices=GGUF_DTYPES, default="f32", help="GGUF tensor type (2-D tensors; 1-D stay F32)")
    p.add_argument("-o", "--output", required=True, help="output directory (hf) or .gguf file")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from shiptwo.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    if args.format == "hf":
        from shiptwo.formats.hf import export_hf

        if args.dtype != "f32":
            raise ShiptwoError(f"export: --dtype {args.dtype} applies to gguf only (hf exports are float32)")
        out = export_hf(ckpt, args.output)
    else:
        from shiptwo.formats.gguf_export import export_gguf

        out = export_gguf(ckpt, args.output, args.dtype)
    print(f"shiptwo: exported {args.checkpoint} as {args.format} to {out}")
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser("import", help="import a LLaMA Hugging Face directory or GGUF file as a native checkpoint")
    p.add_argument("source", help="Hugging Face directory, or a .gguf file of any tensor type gguf-py dequantizes")
    p.add_argument("-o", "--output", required=True, help="native checkpoint (.safetensors) to write")
    p.add_argument("--license", default=None, help="model license (overrides config.json / general.license)")
    p.add_argument("--data-source", default=None, help="training data source (overrides the source's)")
    p.add_argument("--data-license", default=None, help="training data license (overrides the source's)")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args) -> int:
    from shiptwo.formats.artifact import KIND_GGUF, artifact_kind

    flags = {META_LICENSE: args.license, META_DATA_SOURCE: args.data_source, META_DATA_LICENSE: args.data_license}
    if artifact_kind(args.source) == KIND_GGUF:
        from shiptwo.formats.gguf_import import import_gguf as importer
    else:
        from shiptwo.formats.hf import import_hf as importer
    out = importer(args.source, args.output, flags)
    print(f"shiptwo: imported {args.source} to {out}")
    return 0


def _add_publish(sub) -> None:

    p = sub.add_parser("publish", help="copy release artifacts into a directory with a SHA-256 manifest")
    p.add_argument("artifacts", nargs="+", help="checkpoint, GGUF files, HF export directories, ...")
    p.add_argument("-o", "--output", required=True, help="release directory")
    p.add_argument("--spec", default=None, help="spec file (default: the project's spec/ship-two.yaml)")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args) -> int:
    from shiptwo.formats.release import publish

    manifest = publish(args.artifacts, args.output, args.spec)
    print(f"shiptwo: published {len(args.artifacts)} artifact(s); manifest {manifest}")
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="re-hash a published release; exit 1 naming each missing, extra or tampered file")
    p.add_argument("release_dir")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from shiptwo.formats.release import verify

    problems = verify(args.release_dir)
    for problem in problems:
        print(f"shiptwo: verify: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"shiptwo: {args.release_dir}: every file verifies")
    return 0


COMMANDS = [_add_export, _add_import, _add_publish, _add_verify]


