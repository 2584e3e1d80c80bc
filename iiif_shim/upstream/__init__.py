"""The outbound side: one HTTP client for every backend and object source (limits, containment,
retries, the circuit breaker), URL templates no value can leave, and the parsing of hostile
answers.
"""
