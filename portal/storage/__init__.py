"""Durable storage: the Storage seam (base.py) and its backends (sqlite.py)."""
