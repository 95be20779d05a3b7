"""The FastAPI side of the image-rendering patch: the router, its storage and image work."""
