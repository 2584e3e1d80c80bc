"""The whole server's settings: YAML read into frozen, typed settings, each component's schema
assembled, every problem reported with its path (``settings.py``); the configuration reference
rendered from those schemas (``reference.py``).
"""
