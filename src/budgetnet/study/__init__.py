"""The study's reproduction: its five experiments (experiments/) and STUDY.md beside the published numbers."""
