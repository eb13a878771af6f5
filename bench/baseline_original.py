"""The original preprocessing, re-created as a baseline (benchmark figure 1c).

What the reference solution did before any model ran, per video, with the
FFmpeg command line (its stated tool):

1. every frame of the dashcam video to PNG      ``<out>/video/<frame:06d>.png``
2. every frame of the gaze heatmap to PNG       ``<out>/heatmap/<frame:06d>.png``
3. a re-encoded stacked clip, heatmap above the video (scaled to the smaller
   width when they differ)                       ``<out>/stacked.mp4`` (H.264)
4. every frame of the stacked clip to PNG        ``<out>/stacked/<frame:06d>.png``

Only every 10th stacked frame is ever read by the captioner; coool's stage 1
writes just those (``coool.frames.extract_caption_frames``). This script is
written from the published description, not copied: it exists to be timed.

    python -m bench.baseline_original VIDEO HEATMAP OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args: str) -> None:
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def _width(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        cap.release()


def _frames_to_png(src: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-i", str(src), "-start_number", "1", str(folder / "%06d.png"))


def _stack(video: Path, heatmap: Path, dst: Path) -> None:
    width = min(_width(video), _width(heatmap))
    # Heatmap on top; each input scaled to the common width (even height for yuv420p).
    graph = (
        f"[0:v]scale={width}:-2[h];[1:v]scale={width}:-2[v];"
        "[h][v]vstack=inputs=2:shortest=1[out]"
    )
    _ffmpeg("-i", str(heatmap), "-i", str(video), "-filter_complex", graph, "-map", "[out]",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(dst))


def preprocess(video: Path, heatmap: Path, out_dir: Path) -> dict[str, int]:
    """All four steps for one video; returns the files and bytes written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _frames_to_png(video, out_dir / "video")
    _frames_to_png(heatmap, out_dir / "heatmap")
    _stack(video, heatmap, out_dir / "stacked.mp4")
    _frames_to_png(out_dir / "stacked.mp4", out_dir / "stacked")
    files = total = 0
    for root, _, names in os.walk(out_dir):
        for name in names:
            files += 1
            total += os.stat(os.path.join(root, name)).st_size
    return {"files": files, "bytes": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_original", description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("heatmap", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps(preprocess(args.video, args.heatmap, args.out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
