"""Image decoding and the colour measurements of the simulated server."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest
import sim_scenes as scenes

from coool.sim.images import (
    MediaError,
    analyse_frame,
    analyse_stacked,
    count_vehicle_blobs,
    decode_image_url,
    gaze_column,
    red_fraction,
    side_of,
)


def test_data_url_png_roundtrips_exactly() -> None:
    image = scenes.road(red_radius=20)
    decoded = decode_image_url(scenes.data_url(image), None)
    assert np.array_equal(decoded, image)


def test_data_url_jpeg_decodes_to_same_shape() -> None:
    image = scenes.road()
    decoded = decode_image_url(scenes.data_url(image, ".jpg"), None)
    assert decoded.shape == image.shape


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@@not-base64@@@",
        "data:image/png," + base64.b64encode(b"x").decode(),  # not base64-flagged
        "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
        "http://example.com/a.png",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(MediaError):
        decode_image_url(url, None)


def _write_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), scenes.road())
    return path


def test_file_url_inside_allowed_path_is_read(tmp_path: Path) -> None:
    png = _write_png(tmp_path / "media" / "f.png")
    assert decode_image_url(png.as_uri(), tmp_path / "media").shape == (scenes.H, scenes.W, 3)


def test_file_urls_outside_allowed_path_or_without_one_are_refused(tmp_path: Path) -> None:
    inside = _write_png(tmp_path / "media" / "f.png")
    outside = _write_png(tmp_path / "secret.png")
    with pytest.raises(MediaError, match="allowed"):
        decode_image_url(outside.as_uri(), tmp_path / "media")
    # A path that climbs out with .. is judged after resolving it.
    with pytest.raises(MediaError):
        decode_image_url(f"file://{tmp_path}/media/../secret.png", tmp_path / "media")
    with pytest.raises(MediaError, match="no allowed local media path"):
        decode_image_url(inside.as_uri(), None)
    with pytest.raises(MediaError, match="no such image"):
        decode_image_url((tmp_path / "media" / "missing.png").as_uri(), tmp_path / "media")


def test_red_fraction_counts_saturated_red_only() -> None:
    image = np.full((100, 100, 3), 110, np.uint8)
    image[:10, :50] = (0, 0, 255)  # 5% pure red
    image[50:60, :50] = (0, 120, 255)  # orange: too much green
    assert red_fraction(image) == pytest.approx(0.05)


def test_vehicle_blobs_counts_dark_and_blue_boxes_not_road() -> None:
    assert count_vehicle_blobs(scenes.road(vehicles=0)) == 0
    assert count_vehicle_blobs(scenes.road(vehicles=3)) == 3


def test_analyse_frame_locates_the_obstacle() -> None:
    facts = analyse_frame(scenes.road(red_radius=30, red_x=260))
    assert facts.red_fraction > 0.03
    assert facts.red_span is not None and side_of(facts.red_span[0]) == "right"
    assert analyse_frame(scenes.road()).red_span is None


def test_gaze_column_and_overlap_with_obstacle() -> None:
    assert gaze_column(scenes.heatmap(None)) is None
    assert side_of(gaze_column(scenes.heatmap(40)) or 0.5) == "left"
    on = analyse_stacked(scenes.stacked(red_radius=30, gaze_x=scenes.W // 2))
    off = analyse_stacked(scenes.stacked(red_radius=30, gaze_x=30))
    assert on.gaze_on_obstacle and not off.gaze_on_obstacle
    # The heatmap half never counts as obstacle or vehicle.
    assert analyse_stacked(scenes.stacked(red_radius=0, vehicles=2)).scene.red_fraction == 0.0
    assert analyse_stacked(scenes.stacked(vehicles=2)).scene.vehicles == 2
