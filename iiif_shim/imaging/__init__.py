"""The pixel work: the engine seam, the Pillow and libvips engines, the cost model and memory
budget, the thread pool, format readers.
"""
