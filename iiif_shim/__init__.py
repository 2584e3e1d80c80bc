"""iiif-shim: IIIF Image API 3.0 and 2.1 in front of the image servers institutions already run."""

__version__ = "0.1.0"
