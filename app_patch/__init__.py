"""The image-rendering patch for the flowise-proxy chat service (files, thumbnails, history)."""
