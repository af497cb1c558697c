"""The monitoring page (issue #14): templates, static files and the routes mounted at `/`."""
