"""Input folders: pair ``videos/<id>.<ext>`` with ``heatmaps/<id>.<ext>`` and name every bad file."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv")


def video_id_of(path: str | os.PathLike[str]) -> int | None:
    """The video id of ``<id>.mp4``: ASCII digits only (not "²" or other scripts' digits),
    at most 18 of them (an id must fit the submission's 64-bit integer column)."""
    stem = Path(path).stem
    return int(stem) if re.fullmatch(r"[0-9]{1,18}", stem) else None


@dataclass
class VideoPair:
    video_id: int
    video: Path
    heatmap: Path | None


@dataclass
class InputProblem:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _video_files(folder: Path) -> list[Path]:
    # Hidden files (.DS_Store, editor temp files) and non-video files are not inputs.
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
    )


def _odd_files(folder: Path) -> list[Path]:
    """Entries named like a video that are not (links to) regular files: a directory, a fifo, a broken link."""
    return sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_file()
    )


def what_is(path: Path) -> str:
    """What a path that is not a regular file is, in words ("a directory", "a broken symbolic link to x")."""
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        if not path.exists():
            return f"a broken symbolic link (to {target}, which does not exist)"
        return f"a symbolic link to {what_is(path.resolve())} ({target})"
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (fifo)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a regular file")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _by_id(files: list[Path]) -> tuple[dict[int, list[Path]], list[Path]]:
    """Group files by integer id; also return the files whose stem is not an id."""
    groups: dict[int, list[Path]] = {}
    not_ids: list[Path] = []
    for p in files:
        vid = video_id_of(p)
        if vid is None:
            not_ids.append(p)
        else:
            groups.setdefault(vid, []).append(p)
    return groups, not_ids


def _find_heatmap(video: Path, candidates: list[Path]) -> tuple[Path | None, str]:
    same_name = [p for p in candidates if p.name == video.name]
    if same_name:
        return same_name[0], ""
    if len(candidates) == 1:
        return candidates[0], ""
    if not candidates:
        return None, ""
    names = ", ".join(p.name for p in candidates)
    return None, f"several heatmaps match video id {video_id_of(video)} ({names}); none used"


def scan_inputs(
    videos_dir: str | os.PathLike[str], heatmaps_dir: str | os.PathLike[str]
) -> tuple[list[VideoPair], list[InputProblem]]:
    """Pair ``videos/<id>.<ext>`` with ``heatmaps/<id>.<ext>``, sorted by id.

    Problems (each naming its file): a stem that is not a non-negative
    integer (skipped), duplicate ids like 7.mp4 and 007.mp4 (both skipped),
    a missing heatmap (the pair is kept with heatmap None; a heatmap name that
    is not a regular file, such as a directory or a broken link, is named as such). A missing or
    empty videos folder raises ValueError: there is nothing to do at all.
    """
    videos_dir, heatmaps_dir = Path(videos_dir), Path(heatmaps_dir)
    if not videos_dir.is_dir():
        raise ValueError(f"videos folder {videos_dir} does not exist or is not a folder")
    files = _video_files(videos_dir)
    if not files:
        exts = ", ".join(f"*{e}" for e in VIDEO_EXTENSIONS)
        raise ValueError(f"videos folder {videos_dir} holds no video files ({exts})")

    problems: list[InputProblem] = []
    groups, not_ids = _by_id(files)
    for p in not_ids:
        why = "file name is not a video id (expected <non-negative integer>.mp4); skipped"
        problems.append(InputProblem(p, why))
    heat_groups: dict[int, list[Path]] = {}
    odd_heatmaps: dict[int, list[Path]] = {}  # named like a heatmap, but no regular file
    if heatmaps_dir.is_dir():
        heat_groups, _ = _by_id(_video_files(heatmaps_dir))
        odd_heatmaps, _ = _by_id(_odd_files(heatmaps_dir))

    pairs: list[VideoPair] = []
    for vid in sorted(groups):
        same = groups[vid]
        if len(same) > 1:
            for p in same:
                others = ", ".join(o.name for o in same if o != p)
                problems.append(InputProblem(p, f"duplicate video id {vid} (also {others}); neither is used"))
            continue
        video = same[0]
        heatmap, why = _find_heatmap(video, heat_groups.get(vid, []))
        if heatmap is None:
            odd = sorted(odd_heatmaps.get(vid, []), key=lambda p: p.name != video.name)  # the same name first
            if not why and odd:
                why = f"heatmap {odd[0]} for video {vid} is {what_is(odd[0])}, not a video file"
            if not why:
                where = heatmaps_dir if heatmaps_dir.is_dir() else f"{heatmaps_dir} (folder does not exist)"
                why = f"no heatmap for video {vid}: expected {video.name} in {where}"
            problems.append(InputProblem(video, why))
        pairs.append(VideoPair(vid, video, heatmap))
    problems.sort(key=lambda p: str(p.path))
    return pairs, problems

