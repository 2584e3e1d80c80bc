"""Pure IIIF Image API code: request syntax, resolution to pixels, info.json. No I/O here."""
