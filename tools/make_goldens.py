"""Goldens for stage 4 (describe) from the original solution's own code.

    python tools/make_goldens.py PATH_TO_ORIGINAL [-o tests/data/goldens]

Runs the original's stage-4 functions and scripts (never copied here: the
modules are imported from the given checkout by path, with ``openai``
replaced by a scripted stand-in) on generated inputs, and writes what they
return:

- ``describe_clean.json``: a sample's text -> the original's parse and
  post-validation (cleaning) for each pass's keys;
- ``describe_vote.json``: cleaned samples -> the original's vote;
- ``describe_flow.json``: scripted answers for every request -> the
  requests the original's ``main`` sends (pass, n, sampling, response
  format), the reconcile context and the ``ans.json`` it writes (re-ask
  decisions and the final start frame);
- ``describe_windows.json``: caption tables and detected frames -> the
  frames the two frame-selection scripts pick.

The output is deterministic (fixed seeds): running it again gives the same
files, which ``tests/coool/test_goldens_describe.py`` checks.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import random
import runpy
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STAGE4 = Path("004_description") / "src"
DESCRIBE_MODULE = "glm45v_multi_image_infer_vllm_sc.py"
CAPTION_WINDOW_SCRIPT = "select_frames_from_csv.py"
DETECTED_WINDOW_SCRIPT = "select_frames_from_gpt-oss_csv.py"

START = "Incident window start frame"
DETECTION = "Incident Detection"
SEVERITY = "Crash Severity"
EGO = "Ego-car involved"
LABEL = "Label"
COUNTS = [
    "Number of Bicyclists/Scooters",
    "Number of animals involved",
    "Number of pedestrians involved",
    "Number of vehicles involved (excluding ego-car)",
]
CAPTION = "Caption Before Incident"
REASON = "Reason of Incident"
PASS_KEYS = {
    "counts": [START, DETECTION, SEVERITY, EGO, LABEL, *COUNTS],
    "texts": [START, CAPTION, REASON],
    "reconcile": [START, DETECTION, SEVERITY, EGO, LABEL, *COUNTS, CAPTION, REASON],
}
SEVERITIES = [
    "0. No Crash",
    "1. Ego-car collided but did not stop",
    "2. Ego-car collided and could not continue moving",
    "3. Ego-car collided with at-least one person or cyclist",
    "4. Other cars collided with person/car/object but ego-car is ok",
    "5. Multiple vehicles collided with ego-car",
    "6. One or Multiple vehicles collided but ego-car is fine",
]
LABELS = ["ego-car hits barrier", "animal on the road", "vehicle drives into another vehicle", "unknown",
          "car flipped over", "vehicle hits ego-car"]
TEXTS = ["Ego-car drives along a wet road behind a white van.",
         "A grey car cuts into the ego lane and hits the barrier.",
         "The ego-car waits at a red light near a crosswalk.",
         "", "   ", "自车在车道内行驶。"]


# ---------------------------------------------------------------- loading the original


class _ScriptedOpenAI:
    """Stands in for ``openai.OpenAI``: answers each request from ``script`` and records it."""

    script: dict[str, list[list[str]]] = {}
    calls: list[dict[str, Any]] = []
    prompts: dict[str, str] = {}

    def __init__(self, base_url: str = "", api_key: str = "") -> None:
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self._create))

    def _create(self, **kwargs: Any) -> Any:
        text = kwargs["messages"][0]["content"][0]["text"]
        name = next(n for n, p in self.prompts.items() if text == p or text.startswith(p + "\n\n"))
        extra = kwargs.get("extra_body", {})
        n = kwargs.get("n", 1)
        call = {
            "pass": name,
            "n": n,
            "single": "n" not in kwargs,
            "temperature": kwargs["temperature"],
            "top_p": extra.get("top_p"),
            "top_k": extra.get("top_k"),
            "repetition_penalty": extra.get("repetition_penalty"),
            "max_tokens": kwargs["max_tokens"],
            "response_format": kwargs.get("response_format"),
            "parts": [part["type"] for part in kwargs["messages"][0]["content"]],
        }
        if name == "reconcile":
            call["context"] = text[len(self.prompts["reconcile"]) + 2 :]
        self.calls.append(call)
        queue = self.script[name]
        contents = queue.pop(0) if queue else [""] * n
        choices = [
            types.SimpleNamespace(message=types.SimpleNamespace(content=c, reasoning_content=None)) for c in contents
        ]
        usage = types.SimpleNamespace(completion_tokens=1)
        return types.SimpleNamespace(choices=choices, usage=usage)


def load_original(root: Path, filename: str) -> types.ModuleType:
    """One of the original's modules, imported by path with ``openai`` stubbed."""
    sys.modules.setdefault("openai", types.SimpleNamespace(OpenAI=_ScriptedOpenAI))  # type: ignore[arg-type]
    path = root / STAGE4 / filename
    spec = importlib.util.spec_from_file_location(f"original_{path.stem.replace('-', '_')}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OpenAI = _ScriptedOpenAI  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def _argv(args: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = args
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.argv = saved


# ---------------------------------------------------------------- generated inputs


def _value(rng: random.Random, key: str) -> Any:
    """A plausible or hostile value for one answer key."""
    roll = rng.random()
    if roll < 0.06:
        return None
    if roll < 0.1:
        return rng.choice(["", " ", "N/A", [1, 2], {"a": 1}, True, 2.5, -3, "7 cars", "2.7", "-1", "1e2"])
    if key == START:
        return rng.choice([-1, -1, 0, 1, 2, 5, 8, 11, -2, 40, "3", 2.5])
    if key == DETECTION:
        return rng.choice([-1, 0, 1, 1, 1, 2, "1", "-1", 0.6])
    if key == EGO:
        return rng.choice([0, 1, 1, 3, "1", False])
    if key == SEVERITY:
        return rng.choice([*SEVERITIES, "", "3", "severe", " 1. Ego-car collided but did not stop "])
    if key == LABEL:
        return rng.choice([*LABELS, "", "Ego-car hits barrier", "fog"])
    if key in COUNTS:
        return rng.choice([0, 0, 1, 2, 3, 25, -1, "4", 1.5, 2.5])
    return rng.choice(TEXTS)


def _answer(rng: random.Random, keys: list[str]) -> dict[str, Any]:
    return {k: _value(rng, k) for k in keys if rng.random() > 0.08}


def _content(rng: random.Random, keys: list[str]) -> str:
    """A sample's text: mostly JSON, sometimes fenced, wrapped in prose, broken or curly-quoted."""
    body = json.dumps(_answer(rng, keys), ensure_ascii=False)
    roll = rng.random()
    if roll < 0.55:
        return body
    if roll < 0.62:
        return f"```json\n{body}\n```"
    if roll < 0.68:
        return f"Here it is: {body} Done."
    if roll < 0.73:
        return body.replace('"', "\u201c", 1)
    if roll < 0.78:
        return body[: len(body) // 2]
    if roll < 0.82:
        return "<think>I look at {the frames}</think>" + body
    if roll < 0.86:
        return rng.choice(["", "Sorry, I cannot help.", "null", "[1, 2]", "{", "}{", '"text"', "NaN"])
    if roll < 0.9:
        return json.dumps({k.lower(): v for k, v in _answer(rng, keys).items()})
    return json.dumps({**_answer(rng, keys), "extra": {"nested": "{"}})


# ---------------------------------------------------------------- the goldens


def clean_goldens(mod: types.ModuleType, rng: random.Random, cases: int) -> list[dict[str, Any]]:
    out = []
    for i in range(cases):
        name = ("counts", "texts", "reconcile")[i % 3]
        content = _content(rng, PASS_KEYS[name])
        parsed = mod.parse_json_robust(content)
        try:
            cleaned = mod.post_validate(parsed, expected_keys=PASS_KEYS[name])
        except Exception as exc:  # the original crashes: coool's guard must act instead
            out.append({"pass": name, "content": content, "crash": type(exc).__name__})
            continue
        out.append({"pass": name, "content": content, "cleaned": cleaned})
    return out


def vote_goldens(mod: types.ModuleType, rng: random.Random, cases: int) -> list[dict[str, Any]]:
    out = []
    for i in range(cases):
        name = ("counts", "texts", "reconcile")[i % 3]
        size = rng.choice([0, 1, 2, 3, 4, 4, 4, 5])
        samples = []
        for _ in range(size):
            parsed = mod.parse_json_robust(_content(rng, PASS_KEYS[name]))
            if isinstance(parsed, dict):
                samples.append(mod.post_validate(parsed, expected_keys=PASS_KEYS[name]))
        voted = mod.aggregate_final_jsons(samples)
        out.append({"pass": name, "samples": samples, "voted": list(voted.items())})
    return out


def _flow_script(rng: random.Random) -> dict[str, list[list[str]]]:
    script: dict[str, list[list[str]]] = {}
    for name in ("counts", "texts", "reconcile"):
        calls = []
        for k in range(12):
            n = 4 if k == 0 or (name == "reconcile" and k <= 5) else 1
            good = rng.random() < 0.6
            calls.append([
                json.dumps(_full(rng, PASS_KEYS[name])) if good else _content(rng, PASS_KEYS[name]) for _ in range(n)
            ])
        script[name] = calls
    return script


def _full(rng: random.Random, keys: list[str]) -> dict[str, Any]:
    """A complete, mostly valid answer (flows need some that end their re-asks)."""
    detection = rng.choice([-1, 0, 1])
    values = {
        START: rng.choice([-1, 0, 2, 5, 7, 11]) if detection != -1 else -1,
        DETECTION: detection,
        SEVERITY: rng.choice(SEVERITIES[1:]) if detection == 1 else SEVERITIES[0],
        EGO: rng.choice([0, 1]),
        LABEL: rng.choice(LABELS),
        **{c: rng.choice([0, 0, 1, 2]) for c in COUNTS},
        CAPTION: rng.choice(TEXTS[:3]),
        REASON: rng.choice(TEXTS[:3]),
    }
    return {k: values[k] for k in keys}


def flow_goldens(mod: types.ModuleType, rng: random.Random, cases: int) -> list[dict[str, Any]]:
    """The original's ``main`` end to end on scripted answers (v4's sampling, n=4)."""
    _ScriptedOpenAI.prompts = {"counts": mod.PROMPT_COUNT, "texts": mod.PROMPT_TEXT, "reconcile": mod.PROMPT_RECONCILE}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(cases):
            frames = sorted(rng.sample(range(1, 400), rng.choice([3, 12, 24])))
            folder = Path(tmp) / str(case)
            folder.mkdir()
            images = [str(folder / f"{f:06d}.png") for f in frames]
            script = _flow_script(rng)
            _ScriptedOpenAI.script = json.loads(json.dumps(script))  # consumed as the calls go
            _ScriptedOpenAI.calls = []
            output = folder / "ans.json"
            args = ["describe", "--images", *images, "--output_json", str(output), "--json_mode", "--sc_at", "all",
                    "--n_samples", "4", "--temperature", "0.6", "--top_p", "0.95", "--top_k", "-1",
                    "--repetition_penalty", "1.0"]
            try:
                with _argv(args):
                    mod.main()
                row: Any = json.loads(output.read_text(encoding="utf-8"))
                crash = None
            except Exception as exc:  # the original crashes: coool's guard acts
                row, crash = None, type(exc).__name__
            used = {name: sum(call["pass"] == name for call in _ScriptedOpenAI.calls) for name in script}
            script = {name: calls[: used[name]] for name, calls in script.items()}  # only what was asked
            out.append({"video": case, "frames": frames, "script": script, "calls": _ScriptedOpenAI.calls,
                        "row": row, "crash": crash})
    return out


def _write_caption_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["frame", "image", "Scene", "Hazard_Clues", "Gaze", "Number_of_Bicyclists_Scooters",
               "Number_of_Animals", "Number_of_Pedestrians", "Number_of_Vehicles_excluding_ego",
               "Incident_Detection", "Crash_Severity", "Ego_car_involved", "Label", "path"]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def _caption_rows(rng: random.Random) -> tuple[list[dict[str, Any]], bool]:
    """A caption table; the flag says it holds a value whose reading issue #14 item 4 changes."""
    count = rng.choice([1, 5, 11, 12, 13, 20, 30])
    rule = False
    odd = rng.random() < 0.2  # a fifth of the tables hold values item 4 reads differently
    rows = []
    for i in range(count):
        detection: Any = -1 if rng.random() < 0.8 else rng.choice([0, 1])
        if odd and rng.random() < 0.15:
            detection, rule = rng.choice(["", "x", "nan"]), True
        clue = rng.choice(["none", "none", "None", "", "null", "NA", "n/a", "a red barrier ahead", "debris"])
        if odd and rng.random() < 0.15:
            clue, rule = rng.choice(["node", "None.", " N/A "]), True
        rows.append({
            "frame": 1 + 10 * i, "image": f"{1 + 10 * i:06d}.png", "Hazard_Clues": clue,
            "Incident_Detection": detection, "Crash_Severity": "unknown", "Ego_car_involved": 0, "Label": "unknown",
            **{c: rng.choice([0, 0, 0, 1, 2]) for c in ("Number_of_Bicyclists_Scooters", "Number_of_Animals",
                                                         "Number_of_Pedestrians", "Number_of_Vehicles_excluding_ego")},
        })
    rng.shuffle(rows)
    return rows, rule


def window_goldens(root: Path, rng: random.Random, cases: int) -> dict[str, list[dict[str, Any]]]:
    caption_script = root / STAGE4 / CAPTION_WINDOW_SCRIPT
    detected_script = root / STAGE4 / DETECTED_WINDOW_SCRIPT
    caption_cases, detected_cases = [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for case in range(cases):
            rows, rule = _caption_rows(rng)
            # Not post 0: the original's script reads it as "up to the last row", which no configuration uses.
            pre, post = rng.choice([(6, 5), (6, 5), (3, 2), (0, 4), (11, 1)])
            images = base / f"c{case}" / "7"
            images.mkdir(parents=True)
            for row in rows:
                (images / f"{row['frame']:06d}.png").touch()
            table = base / f"c{case}.csv"
            _write_caption_csv(table, rows)
            out = base / f"c{case}.txt"
            args = ["select", "--csv", str(table), "--images_dir", str(images), "--pre_frames", str(pre),
                    "--post_frames", str(post), "--out", str(out)]
            with _argv(args):
                runpy.run_path(str(caption_script), run_name="__main__")
            picked = [int(Path(p).stem) for p in out.read_text(encoding="utf-8").split()]
            caption_cases.append({"rows": rows, "pre": pre, "post": post, "frames": picked, "item4": rule})
        for case in range(cases):
            total = rng.choice([5, 12, 30, 60, 120, 121, 300])
            pre, post, step = rng.choice([(11, 2, 6), (6, 5, 10), (12, 11, 6), (6, 5, 8), (1, 1, 3), (0, 0, 1)])
            frame = rng.choice([1, 2, total // 2, total - 1, total, rng.randint(1, total), total + 15, 0, -4])
            video = 5
            images = base / f"d{case}" / str(video)
            images.mkdir(parents=True)
            for f in range(1, total + 1):
                (images / f"{f:06d}.png").touch()
            table = base / f"d{case}.csv"
            table.write_text(f"video,frame\n4,{rng.randint(1, 50)}\n{video},{frame}\n", encoding="utf-8")
            out = base / f"d{case}.txt"
            args = ["select", "--csv", str(table), "--images_dir", str(images), "--pre_frames", str(pre),
                    "--post_frames", str(post), "--frame_step", str(step), "--out", str(out)]
            try:
                with _argv(args):
                    runpy.run_path(str(detected_script), run_name="__main__")
                picked: Any = [int(Path(p).stem) for p in out.read_text(encoding="utf-8").split()]
            except SystemExit as exc:  # a frame outside the video: the original stops ("Image not found")
                picked = {"exit": str(exc)[:60]}
            detected_cases.append({"frame": frame, "frame_count": total, "pre": pre, "post": post, "step": step,
                                   "frames": picked})
    return {"caption_trigger": caption_cases, "detected_frame": detected_cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("original", type=Path, help="a checkout of the original 2nd-place solution")
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "goldens")
    args = ap.parse_args()
    root = args.original.resolve()
    if not (root / STAGE4 / DESCRIBE_MODULE).is_file():
        raise SystemExit(f"{root}: no {STAGE4 / DESCRIBE_MODULE} (not a checkout of the original solution)")
    mod = load_original(root, DESCRIBE_MODULE)
    args.out.mkdir(parents=True, exist_ok=True)
    goldens = {
        "describe_clean.json": clean_goldens(mod, random.Random(1), 600),
        "describe_vote.json": vote_goldens(mod, random.Random(2), 400),
        "describe_flow.json": flow_goldens(mod, random.Random(3), 120),
        "describe_windows.json": window_goldens(root, random.Random(4), 150),
    }
    for name, cases in goldens.items():
        text = json.dumps({"source": "tools/make_goldens.py", "cases": cases}, ensure_ascii=False, indent=0)
        (args.out / name).write_text(text + "\n", encoding="utf-8")
        print(f"{args.out / name}: written")


if __name__ == "__main__":
    main()
