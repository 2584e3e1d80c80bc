"""The request's path through the shim: identifier routing, the planner, the image service, what
passes through untouched, backend health. No aiohttp here.
"""
