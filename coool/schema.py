"""The 2COOOL submission format: column names and allowed values.

This module is the one source of truth for the format; every other module
(prompts' JSON schemas, validation, the simulated server) reads from here.
"""

from __future__ import annotations

VIDEO = "video"
START_FRAME = "Incident window start frame"
DETECTION = "Incident Detection"
SEVERITY = "Crash Severity"
EGO = "Ego-car involved"
LABEL = "Label"
N_BICYCLISTS = "Number of Bicyclists/Scooters"
N_ANIMALS = "Number of animals involved"
N_PEDESTRIANS = "Number of pedestrians involved"
N_VEHICLES = "Number of vehicles involved (excluding ego-car)"
CAPTION = "Caption Before Incident"
REASON = "Reason of Incident"

COLUMNS: tuple[str, ...] = (
    VIDEO,
    START_FRAME,
    DETECTION,
    SEVERITY,
    EGO,
    LABEL,
    N_BICYCLISTS,
    N_ANIMALS,
    N_PEDESTRIANS,
    N_VEHICLES,
    CAPTION,
    REASON,
)
COUNT_COLUMNS: tuple[str, ...] = (N_BICYCLISTS, N_ANIMALS, N_PEDESTRIANS, N_VEHICLES)
TEXT_COLUMNS: tuple[str, ...] = (CAPTION, REASON)
# The 11 answer fields of a describe prompt: every column but the video id.
ANSWER_FIELDS: tuple[str, ...] = COLUMNS[1:]

DETECTION_VALUES: tuple[int, ...] = (1, 0, -1)  # accident, hazard (no collision), no incident
EGO_VALUES: tuple[int, ...] = (0, 1)

NO_CRASH = "0. No Crash"
SEVERITIES: tuple[str, ...] = (
    NO_CRASH,
    "1. Ego-car collided but did not stop",
    "2. Ego-car collided and could not continue moving",
    "3. Ego-car collided with at-least one person or cyclist",
    "4. Other cars collided with person/car/object but ego-car is ok",
    "5. Multiple vehicles collided with ego-car",
    "6. One or Multiple vehicles collided but ego-car is fine",
)

UNKNOWN_LABEL = "unknown"
LABELS: tuple[str, ...] = (
    "ego-car hits barrier",
    "flying object hit the car",
    "ego-car hit an animal",
    "many cars/pedestrians/cyclists collided",
    "car hits barrier",
    "ego-car hits a pedestrian",
    "animal on the road",
    "car flipped over",
    "ego-car hits a crossing cyclist",
    "vehicle drives into another vehicle",
    "ego-car loses control",
    "scooter on the road",
    "bicycle on road",
    "pedestrian is crossing the street",
    "pedestrian on the road",
    "vehicle hits ego-car",
    "ego-car hits a vehicle",
    "vehicle overtakes",
    UNKNOWN_LABEL,
)

# Labels that describe a hazard without a collision: what detection 0 allows.
HAZARD_LABELS: tuple[str, ...] = (
    "animal on the road",
    "scooter on the road",
    "bicycle on road",
    "pedestrian is crossing the street",
    "pedestrian on the road",
    "vehicle overtakes",
    "ego-car loses control",
    UNKNOWN_LABEL,
)

# Stage 2 (frame caption) answer fields, in the spec's order.
SCENE = "Scene_Description"
HAZARD_CLUES = "Hazard_Clues"
GAZE = "Gaze_Focus"
CAP_BICYCLISTS = "Number_of_Bicyclists_Scooters"
CAP_ANIMALS = "Number_of_Animals"
CAP_PEDESTRIANS = "Number_of_Pedestrians"
CAP_VEHICLES = "Number_of_Vehicles_excluding_ego"
CAP_DETECTION = "Incident_Detection"
CAP_SEVERITY = "Crash_Severity"
CAP_EGO = "Ego_car_involved"
CAP_LABEL = "Label"
CAPTION_FIELDS: tuple[str, ...] = (
    SCENE,
    HAZARD_CLUES,
    GAZE,
    CAP_BICYCLISTS,
    CAP_ANIMALS,
    CAP_PEDESTRIANS,
    CAP_VEHICLES,
    CAP_DETECTION,
    CAP_SEVERITY,
    CAP_EGO,
    CAP_LABEL,
)
CAPTION_COUNT_FIELDS: tuple[str, ...] = (CAP_BICYCLISTS, CAP_ANIMALS, CAP_PEDESTRIANS, CAP_VEHICLES)
CAPTION_SEVERITIES: tuple[str, ...] = SEVERITIES + ("unknown",)


def fallback_row(video: int) -> dict[str, object]:
    """The row a video gets when nothing could be found for it: no incident."""
    return {
        VIDEO: int(video),
        START_FRAME: 1,
        DETECTION: -1,
        SEVERITY: NO_CRASH,
        EGO: 0,
        LABEL: UNKNOWN_LABEL,
        N_BICYCLISTS: 0,
        N_ANIMALS: 0,
        N_PEDESTRIANS: 0,
        N_VEHICLES: 0,
        CAPTION: "Ego-car drives along the road with no visible hazard ahead.",
        REASON: "unknown hazard: no incident is visible in the video.",
    }
