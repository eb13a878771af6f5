"""The studio's media: the H.264 copies browsers play."""

from __future__ import annotations

import pytest

from coool.decode import VideoError, probe, read_frames
from coool.studio.media import transcode_h264
from coool.synthetic import read_stamp

# --- H.264 --------------------------------------------------------------------------------------


def test_transcode_h264(tmp_path, synthetic_data) -> None:
    dst = tmp_path / "studio" / "0.mp4"
    assert transcode_h264(synthetic_data.video(0), dst) == dst
    info = probe(dst)
    assert info.codec == "h264"
    assert (info.frames, info.width, info.height) == (120, 320, 180)
    assert [read_stamp(img) for _, img in read_frames(dst, [1, 60, 120])] == [1, 60, 120]
    assert sorted(p.name for p in dst.parent.iterdir()) == ["0.mp4"]  # no temp left behind
    with pytest.raises(VideoError):
        transcode_h264(tmp_path / "missing.mp4", tmp_path / "x.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    with pytest.raises(VideoError, match="ffmpeg"):
        transcode_h264(bad, tmp_path / "out" / "bad.mp4")
    assert list((tmp_path / "out").iterdir()) == []
