"""The language step: programs on the scene graph, their wordings, choosing a scene's
expressions, and their validity per view.  Imports ``scene`` (and jinja2); never storage or
rendering."""
