"""``iiif-shim export``: a level-0 static copy of images and objects that any web server or
bucket can serve at the URLs the shim itself uses.

``names``: which identifiers and object names can be files, and where on disk; ``plan``: the
level-0 info.json of an image and every file a level-0 client asks for, grouped by the pixels
they hold; ``documents``: manifests, collections and the index page as the export holds them;
``files``: atomic, durable, resumable writing and linking, never through a link, one run at a
time; ``progress``: the progress bar and lines; ``run``: the folder checked and locked, the
services opened as serving opens them, the selection streamed, images published whole (their
stamps), the folder's record and its collections; ``command``: the command line.
"""
