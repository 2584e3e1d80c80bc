"""The IIIF Authorization Flow API (Auth 1.0 and 2.0): access policies, the signed cookies and
tokens that carry a login, the decision of who sees which tier of an image, and the service
descriptions and messages of both versions. No aiohttp here: ``web/auth.py`` speaks HTTP."""
