"""Content Search (IIIF Content Search API 2.0 and 1.0): the text of each canvas, read from the
institution's OCR files, indexed, and searched."""
