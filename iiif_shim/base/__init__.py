"""The bottom floor: the one exception tree and the settings schema every component declares its
settings with.
"""
