"""Every key name, status and tensor name in one place (as gguf-py's constants.py does)."""

from __future__ import annotations

# --- spec and results ----------------------------------------------------------------------

SPEC_PATH = "spec/ship-two.yaml"
RESULTS_PATH = "reports/results.json"
REPORT_PATH = "reports/ship-two.md"
DEFAULT_PROFILE = "default"
PROFILE_ENV = "SHIPTWO_PROFILE"
PROFILES = ("smoke", "default", "full")

MODELS = ("model1", "model2")
ROOT_CAUSE_CLASSES = ("data", "optimization", "infrastructure", "packaging")
COMPARISONS = ("<=", ">=", "==")

PASS = "PASS"
FAIL = "FAIL"
ERROR = "ERROR"
BLOCKED = "BLOCKED"
SKIPPED = "SKIPPED"
NOT_RUN = "NOT RUN"
NO_TEST = "NO TEST"
STATUSES = (PASS, FAIL, ERROR, BLOCKED, SKIPPED, NOT_RUN, NO_TEST)

# --- spine: spec keys, pytest binding, results store, report (issue 2) ---------------------

SPEC_TOP_KEYS = ("version", "models", "criteria")
SPEC_MODEL_KEYS = ("name", "description", "recipe", "min_ship_pct", "required")
SPEC_CRITERION_KEYS = (
    "id", "model", "title", "metric", "comparison", "threshold", "unit", "weight",
    "class", "depends_on", "original", "rationale",
)
SPEC_REQUIRED_CRITERION_KEYS = ("id", "model", "title", "metric", "comparison", "threshold", "unit", "class")
SPEC_FORBIDDEN_KEY = "status"  # status comes only from executed tests, never from the spec
CRITERION_ID_PATTERN = r"^AC-[A-Z0-9]+-\d{3}$"
DEFAULT_WEIGHT = 1.0

ACCEPTANCE_DIR = "acceptance"
AC_MARKER = "ac"
USER_PROPERTY_KEY = "shiptwo_result"  # carries one test's record from an xdist worker to the controller
RESULTS_SCHEMA_VERSION = 1
UNKNOWN_COMMIT = "unknown"
OUTCOME_ORDER = (ERROR, FAIL, SKIPPED, PASS)  # combining several tests of one criterion: worst wins
EVIDENCE_LOSS_CURVE = "loss_curve"  # evidence key whose file the report links as an image
REPORT_TEMPLATE = "report.md.j2"
REPORT_FORMATS = ("md", "json")

# --- artifact store ------------------------------------------------------------------------

ARTIFACT_ROOT = ".shiptwo/artifacts"
ARTIFACT_ROOT_ENV = "SHIPTWO_ARTIFACTS"

# --- trainer, recipes and artifact store (issue 3) -----------------------------------------

RECIPE_DIR = "spec/recipes"
ARTIFACT_MANIFEST = "manifest.json"  # SHA-256 of every artifact file; written last
ARTIFACT_LOCK = ".lock"
CORPUS_MANIFEST = "corpus_manifest.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENS_FILE = "tokens.safetensors"  # the tokenized splits, one int32 tensor per split
BEST_CHECKPOINT = "best.safetensors"
FINAL_CHECKPOINT = "final.safetensors"
TRAIN_LOG = "train_log.jsonl"
LOSS_CURVE = "loss_curve.png"
TRAIN_STATE = "state.safetensors"
MODEL1_HF_DIR = "hf"  # MODEL-1's release formats, next to its checkpoint in the store
MODEL1_GGUF_Q8_0 = "model1-q8_0.gguf"
MODEL1_RELEASE_DIR = "release"

# --- native checkpoint metadata (safetensors __metadata__, all values are strings) ---------

FORMAT_NAME = "shiptwo-checkpoint"
FORMAT_VERSION = "1"
ARCHITECTURE = "llama"  # the llama.cpp / transformers model_type name, never a class name
HF_ARCHITECTURE_CLASS = "LlamaForCausalLM"

META_FORMAT = "format"
META_FORMAT_VERSION = "format_version"
META_ARCHITECTURE = "architecture"
META_CONFIG = "config"  # JSON of ModelConfig, every field
META_TOKENIZER = "tokenizer_json"  # the embedded tokenizer.json text
META_CHAT_TEMPLATE = "chat_template"  # Jinja text, only for chat models
META_LICENSE = "license"
META_DATA_SOURCE = "data_source"
META_DATA_LICENSE = "data_license"
META_TRAINING = "training_summary"  # JSON: steps, tokens, D/N, losses, seed, device, stop reason
META_GOLDEN = "golden_outputs"  # JSON: greedy outputs on the canary prompts at build time
META_CODE_VERSION = "code_version"

PROVENANCE_KEYS = (META_LICENSE, META_DATA_SOURCE, META_DATA_LICENSE)
REQUIRED_META_KEYS = (
    META_FORMAT,
    META_FORMAT_VERSION,
    META_ARCHITECTURE,
    META_CONFIG,
    META_TOKENIZER,
    *PROVENANCE_KEYS,
)

# --- tokenizer -----------------------------------------------------------------------------

EOT_TOKEN = "<|endoftext|>"

# Canary prompts and strings shared by qa, parity checks and golden outputs.
CANARY_PROMPTS = (
    "def fibonacci(n):\n",
    "import os\n\n\ndef read_file(path):\n",
    "class Stack:\n    def __init__(self):\n",
    "for i in range(10):\n",
)
CANARY_STRINGS = (
    "def f(x):\n    return x + 1\n",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n",
    "unicode: héllo wörld — ∑ π ≈ 3.14 中文 🚀",
    "",
    "<|endoftext|> is special",
)

# --- release formats and interop: HF, GGUF, llama.cpp, publish/verify (issue 4) -----------

EXPORT_FORMATS = ("hf", "gguf")
HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_SHARD_INDEX_FILE = "model.safetensors.index.json"
HF_PICKLE_WEIGHTS_FILE = "pytorch_model.bin"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
HF_CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves the template
HF_GENERATION_CONFIG_FILE = "generation_config.json"
HF_MODEL_CARD_FILE = "README.md"
HF_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
HF_HIDDEN_ACT = "silu"
HF_ROPE_TYPE = "default"
HF_DTYPE = "float32"

GGUF_DTYPES = ("f32", "f16", "q8_0")
GGUF_TOKENIZER_MODEL = "gpt2"  # byte-level BPE
GGUF_TOKENIZER_PRE = "gpt-2"  # GPT-2 split regex; an unknown name is llama.cpp's commonest refusal
GGUF_QUANT_BLOCK = 32  # Q8_0 block length: row length must be a multiple
# gguf.Keys has general.license and general.dataset.{id}.name but no dataset licence key;
# this one follows its general.dataset.{id}.* pattern.
GGUF_DATASET_LICENSE = "general.dataset.{id}.license"
GGUF_DATASET_ID = 0

LLAMACPP_GREEDY_STEPS = 32  # AC-SHIP2-009: greedy tokens that must agree with our runtime
LOAD_PARITY_TOL = 1e-4  # AC-SHIP1-001: a runtime "loads" the HF weights when its F32 logits agree this closely

RELEASE_MANIFEST = "manifest.json"
RELEASE_MANIFEST_SCHEMA = 1

# --- runtime, qa, bench and evals (issue 5) --------------------------------------------------

QA_THROUGHPUT_CRITERION = "AC-SHIP2-010"  # whose per-profile threshold is qa's throughput floor
QA_THROUGHPUT_CRITERION_MODEL1 = "AC-SHIP1-007"
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
QA_PARITY_CRITERION = "AC-SHIP2-009"  # its threshold is the GGUF logits tolerance everywhere
# llama.cpp on a Q8_0 GGUF vs our F32 logits, per position; measured >= 0.9995 on MODEL-1 default,
# the same bar as AC-SHIP1-003's weight cosine; another model's weights fall below it.
Q8_0_MIN_LOGIT_COSINE = 0.999
QA_DEGENERATION_TOKENS = 64  # greedy tokens inspected when no golden outputs are recorded
QA_REPORT_FILE = "qa-report.json"
BENCH_PROMPT = "def fibonacci(n):\n"
BENCH_REPORT_FILE = "bench.json"
BENCH_PEERS = ("transformers", "llama.cpp")
HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
HUMANEVAL_MAX_NEW_TOKENS = 256
HUMANEVAL_RESULTS_FILE = "humaneval-results.json"
HUMANEVAL_SAMPLES_FILE = "humaneval-samples.jsonl"
HUMANEVAL_REFERENCE_FILE = "humaneval-reference.json"  # MODEL-1's recorded pass@1, next to its artifacts
VALIDITY_PROMPTS = 100
VALIDITY_MAX_NEW_TOKENS = 128
VALIDITY_RESULTS_FILE = "python-validity.json"
