"""The gateway core: knows nothing of Discord or of HTTP routes. Fronts use ``Gateway``."""
