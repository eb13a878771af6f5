"""Synthetic dashcam clips of realistic size for the benchmarks, made once and cached.

Clips come from :func:`coool.synthetic.make_clip` (MPEG-4 Part 2 like the
challenge originals, with a gaze heatmap of the same size). Sizes alternate
between 1280x720 and 1584x660 at 30 fps; durations spread over 15-40 s.

A *pool* of distinct clips is written once under the cache folder (it takes
minutes: encoding ~1M-pixel frames is not free) and reused by every run.
A *data set* of N videos is a folder of hard links to pool clips: video i is
pool clip i mod pool size, so N=160 costs no more disk or generation time
than N=10 while every video id is still a separate unit of work.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from coool.files import atomic_write_text, json_sha256

FPS = 30
SIZES = ((1280, 720), (1584, 660))
# Durations in seconds. Each block of ten spans 15-40 s with a mean near 27 s,
# so any data set of 10k videos has the same mix of lengths.
FULL_DURATIONS = (15, 40, 20, 35, 25, 30, 18, 38, 23, 28, 16, 39, 21, 34, 26, 31, 17, 37, 24, 29)
# --quick: the short end of the range only, so a run stays within minutes.
QUICK_DURATIONS = (15, 16, 15, 17)
# Bump when the clip recipe changes: the pool folder name includes it.
POOL_VERSION = 1


@dataclass(frozen=True)
class ClipSpec:
    index: int
    width: int
    height: int
    seconds: int
    event_frame: int | None  # None: a clip without an incident

    @property
    def frames(self) -> int:
        return self.seconds * FPS


def pool_specs(quick: bool) -> list[ClipSpec]:
    durations = QUICK_DURATIONS if quick else FULL_DURATIONS
    specs = []
    for i, seconds in enumerate(durations):
        width, height = SIZES[i % 2]
        frames = seconds * FPS
        # Every fifth clip has no incident; the others one at 45-75% of the clip,
        # never on a captioned frame (1 or 0 mod 10), as in coool.synthetic.
        event: int | None = None
        if i % 5 != 4:
            event = int(frames * (0.45 + 0.3 * ((i * 7) % 10) / 10))
            if event % 10 in (0, 1):
                event += 2 - event % 10
        specs.append(ClipSpec(i, width, height, seconds, event))
    return specs


def cache_root() -> Path:
    """Where pools and scratch folders live: $COOOL_BENCH_CACHE or ~/.cache/coool-bench."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coool-bench"
    return Path(os.environ.get("COOOL_BENCH_CACHE") or default)


def _make_one(root: str, spec: ClipSpec) -> None:
    from coool.synthetic import make_clip

    make_clip(
        Path(root) / "videos" / f"{spec.index}.mp4",
        Path(root) / "heatmaps" / f"{spec.index}.mp4",
        frames=spec.frames,
        fps=FPS,
        width=spec.width,
        height=spec.height,
        event_frame=spec.event_frame,
        seed=1000 + spec.index,
        vehicles=1 + spec.index % 2,
        video_id=spec.index,
    )


def ensure_pool(quick: bool, workers: int = 2, log=print) -> tuple[Path, list[ClipSpec]]:
    """The pool folder (videos/, heatmaps/, specs.json), generating missing clips."""
    specs = pool_specs(quick)
    digest = json_sha256([POOL_VERSION, [asdict(s) for s in specs]])[:10]
    root = cache_root() / f"pool-{'quick' if quick else 'full'}-{digest}"
    done = root / "specs.json"
    if done.is_file():
        return root, specs
    missing = [s for s in specs if not ((root / "videos" / f"{s.index}.mp4").is_file()
                                        and (root / "heatmaps" / f"{s.index}.mp4").is_file())]
    log(f"bench: generating {len(missing)} synthetic clips in {root} (once; cached for later runs)")
    if missing:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_make_one, [str(root)] * len(missing), missing))
    atomic_write_text(done, json.dumps([asdict(s) for s in specs], indent=1))
    return root, specs


def make_dataset(pool: Path, specs: list[ClipSpec], n: int, dest: Path, first: int = 0) -> Path:
    """``dest/videos`` and ``dest/heatmaps`` with ids 0..n-1 linking to pool clips.

    Video i is pool clip ``(first + i) mod len(specs)``. Hard links where the
    file system allows, copies otherwise.
    """
    if dest.exists():
        shutil.rmtree(dest)
    for kind in ("videos", "heatmaps"):
        (dest / kind).mkdir(parents=True)
        for i in range(n):
            src = pool / kind / f"{specs[(first + i) % len(specs)].index}.mp4"
            target = dest / kind / f"{i}.mp4"
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)
    return dest


def dataset_specs(specs: list[ClipSpec], n: int, first: int = 0) -> list[ClipSpec]:
    return [specs[(first + i) % len(specs)] for i in range(n)]
