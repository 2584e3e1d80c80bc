"""The caches: in memory, on disk and in Redis, behind one facade; single-flight, the render lock,
purges.
"""
