"""Running the server: the listening socket and signals, the supervisor of several processes and
the connection board its workers share, the event loop.
"""
