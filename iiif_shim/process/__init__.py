"""Running the server: the listening socket and signals, the supervisor of several processes, the
event loop.
"""
