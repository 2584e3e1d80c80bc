"""``iiif-shim export``: a level-0 static copy of images and objects that any web server or
bucket can serve at the URLs the shim itself uses.

``names``: which identifiers and object names can be files, and where on disk; ``plan``: the
level-0 info.json of an image and every file a level-0 client asks for, grouped by the pixels
they hold; ``documents``: manifests, collections and the index page as the export holds them;
``files``: atomic, resumable writing and linking; ``progress``: the progress bar and lines;
``run``: the services opened as serving opens them, the selection, the estimate and the work
in flight; ``command``: the command line.
"""
