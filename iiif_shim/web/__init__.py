"""The HTTP face: the aiohttp application, its middleware and handlers, the connection guard, the
public base URL, the configuration made live.
"""
