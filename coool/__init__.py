"""coool: dashcam videos + gaze heatmaps to a validated 2COOOL submission.

The library holds all the logic as plain Python (no Prefect imports); the
Prefect flows in ``flows/`` only wire it together.
"""

__version__ = "0.1.0"
