"""Example origins: Lambda handlers built on the origin SDK, also run by the local system."""
