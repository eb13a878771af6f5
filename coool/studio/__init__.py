"""coool studio: a local web app over a results directory (browse, blind A/B, scores)."""

from coool.studio.app import create_app, studio_command

__all__ = ["create_app", "studio_command"]
