"""Figures and reports (Markdown, HTML): the output edge of the package."""
