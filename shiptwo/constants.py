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
