"""The site agent: runs at a factory, next to its scheduler, and connects out to the
Fabbrica API with a factory token (the central service never calls into a site)."""
