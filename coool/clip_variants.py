"""Re-encodings of a clip that stress frame-exact reading, and the reference decode to check them.

Made with the bundled ffmpeg binary (imageio-ffmpeg), for tests and benchmarks:

- :func:`mpeg4_simple` : MPEG-4 Part 2 Simple Profile (no B-frames), the
  challenge's codec, at the source's constant frame rate;
- :func:`vfr_dropped`  : variable frame rate by dropping every ``drop_every``-th
  frame and keeping the others' timestamps (gaps in the timeline);
- :func:`vfr_concat`   : variable frame rate by concatenating two segments of
  different rates (the first half at the source rate, the second at half of
  it), joined by ffmpeg's concat demuxer without re-encoding.
- :func:`resampled`    : MPEG-4 Simple Profile at another constant frame rate,
  the same duration (frames dropped or repeated), as a heatmap recorded at
  15 fps beside a 30 fps video.

:func:`reference_frames` is the ground truth: ffmpeg decoding every frame in
decode order with no frame-rate conversion (``-fps_mode passthrough``: no
frame duplicated or dropped to fit a rate), so frame ``n`` is the ``n``-th
picture the decoder produced, the definition coool uses (1-based).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np

# Constant quantiser: good quality, and the same bits on every machine for one ffmpeg.
_MPEG4_SP = ["-c:v", "mpeg4", "-profile:v", "0", "-bf", "0", "-q:v", "3", "-g", "30", "-an"]


def _ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {' '.join(args)}\n{done.stderr.strip()[-2000:]}")


def _into_place(dest: Path, make: Callable[[Path], None]) -> Path:
    """Run ``make(tmp)`` on a temp file beside dest (same extension), then rename: atomic."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.stem}.{uuid.uuid4().hex[:8]}.tmp{dest.suffix}"
    try:
        make(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def mpeg4_simple(src: str | os.PathLike[str], dest: str | os.PathLike[str], frames: int | None = None,
                 loop: bool = False) -> Path:
    """``src`` re-encoded as MPEG-4 Part 2 Simple Profile (constant rate).

    ``frames``: keep only the first that many frames; ``loop``: repeat the
    source as often as needed to reach ``frames`` (longer clips from a short one).
    """
    head = ["-stream_loop", "-1"] if loop else []
    limit = ["-frames:v", str(frames)] if frames else []
    return _into_place(Path(dest), lambda tmp: _ffmpeg(*head, "-i", str(src), *limit, *_MPEG4_SP, str(tmp)))


def resampled(src: str | os.PathLike[str], dest: str | os.PathLike[str], fps: float) -> Path:
    """MPEG-4 Simple Profile at a constant ``fps``, the same duration as ``src`` (ffmpeg's fps filter)."""
    return _into_place(Path(dest), lambda tmp: _ffmpeg("-i", str(src), "-vf", f"fps={fps}", *_MPEG4_SP, str(tmp)))


def vfr_dropped(src: str | os.PathLike[str], dest: str | os.PathLike[str], drop_every: int = 4) -> Path:
    """MPEG-4 Simple Profile with every ``drop_every``-th frame gone and the others' timestamps kept."""
    keep = f"select='not(eq(mod(n\\,{drop_every})\\,{drop_every - 1}))'"
    return _into_place(Path(dest), lambda tmp: _ffmpeg(
        "-i", str(src), "-vf", keep, "-fps_mode", "passthrough", *_MPEG4_SP, str(tmp)))


def vfr_concat(src: str | os.PathLike[str], dest: str | os.PathLike[str], fps: float) -> Path:
    """MPEG-4 Simple Profile: the first half of ``src`` at ``fps``, the second half at ``fps / 2``.

    Two segments encoded separately and joined with the concat demuxer (``-c copy``),
    as a recorder that changed its rate mid-clip would leave them.
    """
    frames = decoded_frame_count(src)
    half = max(1, frames // 2)

    def make(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".vfr-") as work:
            a, b, listing = Path(work) / "a.mp4", Path(work) / "b.mp4", Path(work) / "list.txt"
            # One time base for both, so the demuxer joins them without rescaling.
            tb = ["-video_track_timescale", "90000"]
            _ffmpeg("-i", str(src), "-vf", f"select='lt(n\\,{half})',setpts=N/{fps}/TB", "-fps_mode", "passthrough",
                    *_MPEG4_SP, *tb, str(a))
            _ffmpeg("-i", str(src), "-vf", f"select='gte(n\\,{half})',setpts=N/{fps / 2}/TB",
                    "-fps_mode", "passthrough", *_MPEG4_SP, *tb, str(b))
            listing.write_text(f"file '{a.name}'\nfile '{b.name}'\n")
            _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(tmp))

    return _into_place(Path(dest), make)


def decoded_frame_count(path: str | os.PathLike[str]) -> int:
    """Frames the decoder produces (every frame decoded, no rate conversion)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
           "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    counts = re.findall(r"^frame=(\d+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not counts:
        raise RuntimeError(f"ffmpeg could not decode {path}: {done.stderr.strip()[-2000:]}")
    return int(counts[-1])


def reference_frames(path: str | os.PathLike[str], numbers: Iterable[int],
                     pix_fmt: str = "bgr24") -> tuple[int, dict[int, np.ndarray]]:
    """(decoded frame count, {n: image}) for the wanted 1-based ``numbers``, by the ffmpeg CLI.

    Numbers beyond the count are absent from the dict. See :func:`iter_reference_frames`.
    """
    count = decoded_frame_count(path)
    return count, dict(iter_reference_frames(path, [n for n in numbers if 1 <= int(n) <= count], pix_fmt))


def iter_reference_frames(path: str | os.PathLike[str], numbers: Iterable[int],
                          pix_fmt: str = "bgr24") -> Iterator[tuple[int, np.ndarray]]:
    """(n, image) for each wanted 1-based frame number, ascending, streamed from the ffmpeg CLI.

    Frames come in decode order with no rate conversion; ``pix_fmt`` is
    ``bgr24`` (OpenCV's order) or ``rgb24`` (moviepy's). One frame in memory
    at a time. Stops early (no error) if the file has fewer frames than wanted:
    compare with :func:`decoded_frame_count`.
    """
    if pix_fmt not in ("bgr24", "rgb24"):
        raise ValueError(f"pix_fmt must be bgr24 or rgb24, got {pix_fmt!r}")
    wanted = sorted({int(n) for n in numbers if int(n) >= 1})
    if not wanted:
        return
    width, height = _size(path)
    expr = _select_expression(wanted)
    select = ["-vf", f"select='{expr}'"] if expr else []
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
           "-map", "0:v:0", *select, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    nbytes = width * height * 3
    # With a select filter ffmpeg pipes only the wanted frames; without one, every frame in order.
    positions = iter(wanted) if expr else iter(range(1, wanted[-1] + 1))
    keep = set(wanted)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        ended = False  # True once ffmpeg's output ran out: then its exit status counts
        try:
            for n in positions:
                data = proc.stdout.read(nbytes)
                if len(data) < nbytes:
                    ended = True
                    break
                if n in keep:
                    yield n, np.frombuffer(data, np.uint8).reshape(height, width, 3)
        finally:
            # Stopped before the end (all wanted frames read, or the caller stopped):
            # closing the pipe ends ffmpeg, which then reports the broken pipe: not an error.
            proc.stdout.close()
            if proc.poll() is None and not ended:
                proc.terminate()
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0 and ended:
                raise RuntimeError(f"ffmpeg could not decode {path}: {err[-2000:]}")


def _select_expression(wanted: list[int]) -> str:
    """An ffmpeg ``select`` expression true for the wanted 1-based frames ("" = none fits).

    select's ``n`` counts decoded frames from 0. Evenly spaced frames (every
    10th) get one modulo test; a few others one ``eq`` each (ffmpeg's parser
    refuses long sums, so a long irregular list gets no filter at all).
    """
    first, last = wanted[0] - 1, wanted[-1] - 1
    steps = {b - a for a, b in zip(wanted, wanted[1:])}
    if len(steps) == 1:
        step = steps.pop()
        return f"between(n\\,{first}\\,{last})*not(mod(n-{first}\\,{step}))"
    if len(wanted) == 1:
        return f"eq(n\\,{first})"
    if len(wanted) <= 20:
        return "+".join(f"eq(n\\,{n - 1})" for n in wanted)
    return ""


def _size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of the first video stream, from ffmpeg's stream line."""
    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, check=False)
    match = re.search(r"Stream #\S+.*?Video:.*?(\d{2,5})x(\d{2,5})", done.stderr)
    if not match:
        raise RuntimeError(f"{path}: ffmpeg reports no video stream")
    return int(match.group(1)), int(match.group(2))
