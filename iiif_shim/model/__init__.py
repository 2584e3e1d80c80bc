"""The frozen values that pass between the stages of a request: what is asked of the backend, the
engine's steps, the plan and its key, the facts about a source.
"""
