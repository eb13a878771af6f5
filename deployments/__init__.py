"""Run recipes, environment settings and the demo."""
